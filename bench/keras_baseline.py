#!/usr/bin/env python3
"""The reference autoencoder in Keras 3 (the study's framework) on TensorFlow, timed like `whorl bench`: one
training step (`train_on_batch`: forward, MSE, backward, RMSprop with Keras's defaults) and
inference (`predict_on_batch`), channels-last, float32, on random images of the reference's
shape. Writes the same JSON fields as `whorl bench --json`, so `whorl compare` prints the ratios:

    python3 bench/keras_baseline.py --json keras.json
    whorl bench --device cpu --json whorl.json
    whorl compare whorl.json keras.json
"""
import argparse

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402 (after choosing the backend)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from baseline import median_seconds, print_and_write, report  # noqa: E402


def model(size) -> keras.Model:
    def conv(filters, activation="relu"):
        return layers.Conv2D(filters, 3, padding="same", activation=activation)

    return keras.Sequential([
        keras.Input((size, size, 1)),
        conv(32), layers.MaxPooling2D(2),
        conv(64), layers.MaxPooling2D(2),
        conv(128), conv(128),
        layers.UpSampling2D(2), conv(64),
        layers.UpSampling2D(2), conv(1, "sigmoid"),
    ])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args()
    keras.utils.set_random_seed(13)
    net = model(args.size)
    net.compile(optimizer=keras.optimizers.RMSprop(), loss="mse")
    images = np.random.default_rng(13).random(
        (args.batch_size, args.size, args.size, 1), dtype=np.float32)
    train_s = median_seconds(lambda: net.train_on_batch(images, images), args.repeats)
    infer_s = median_seconds(lambda: net.predict_on_batch(images), args.repeats)
    framework = f"keras {keras.__version__} (tensorflow {tf.__version__})"
    device = tf.config.list_physical_devices("GPU")[0].name if tf.config.list_physical_devices("GPU") else "cpu"
    print_and_write([report(framework, device, args.batch_size, args.size, args.repeats,
                            train_s, infer_s)], args.json)


if __name__ == "__main__":
    main()
