#!/usr/bin/env python3
"""Writes tests/data/keras-adam-case.safetensors: the reference autoencoder trained by Keras 3's
Adam (learning_rate 0.001, beta_1 0.9, beta_2 0.999, epsilon 1e-7) for three steps on one batch,
computed in float64 on TensorFlow's CPU backend and stored as float32.

It starts from the weights `weights.<name>` of ../shared/reference/keras-reference-case.safetensors
(also tests/data/; they do not depend on the image size) on 2 images of 32x32, uniform in [0, 1)
from numpy's default_rng(15). Keys (Keras HWIO kernels under whorl's names conv1.weight ...
conv6.bias):
  input                     [2, 32, 32, 1]
  loss                      [3]: the loss before each step (mean of (output - input)^2)
  step1.<name>              the weights after one step
  step3.<name>              the weights after three steps

    python3 -m venv /tmp/keras && /tmp/keras/bin/pip install tensorflow-cpu==2.21.0 keras==3.15.1 safetensors
    /tmp/keras/bin/python scripts/keras-adam-case.py
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402 (after choosing the backend)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SHARED = os.path.join(ROOT, "..", "shared", "reference", "keras-reference-case.safetensors")
OUT = os.path.join(ROOT, "tests", "data", "keras-adam-case.safetensors")
NAMES = [f"conv{i}" for i in range(1, 7)]
SIZE = 32
STEPS = 3


def model() -> keras.Model:
    def conv(name, filters, activation="relu"):
        return layers.Conv2D(filters, 3, padding="same", activation=activation, name=name)

    return keras.Sequential([
        keras.Input((SIZE, SIZE, 1)),
        conv("conv1", 32), layers.MaxPooling2D(2),
        conv("conv2", 64), layers.MaxPooling2D(2),
        conv("conv3", 128), conv("conv4", 128),
        layers.UpSampling2D(2), conv("conv5", 64),
        layers.UpSampling2D(2), conv("conv6", 1, "sigmoid"),
    ])


def named(prefix, variables):
    """{prefix}conv1.weight ... {prefix}conv6.bias from [kernel1, bias1, ..., kernel6, bias6]."""
    out = {}
    for i, name in enumerate(NAMES):
        out[f"{prefix}{name}.weight"] = np.asarray(variables[2 * i], dtype=np.float32)
        out[f"{prefix}{name}.bias"] = np.asarray(variables[2 * i + 1], dtype=np.float32)
    return out


def main():
    keras.config.set_floatx("float64")
    shared = load_file(SHARED)
    net = model()
    for name in NAMES:
        layer = net.get_layer(name)
        layer.kernel.assign(shared[f"weights.{name}.weight"].astype(np.float64))
        layer.bias.assign(shared[f"weights.{name}.bias"].astype(np.float64))
    images = np.random.default_rng(15).random((2, SIZE, SIZE, 1))
    optimizer = keras.optimizers.Adam(learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    variables = net.trainable_variables
    optimizer.build(variables)
    case = {"input": images.astype(np.float32)}
    losses = []
    for step in range(1, STEPS + 1):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(net(images) - images))
        grads = tape.gradient(loss, variables)
        optimizer.apply(grads, variables)
        losses.append(float(loss))
        if step in (1, STEPS):
            case.update(named(f"step{step}.", [v.numpy() for v in variables]))
    case["loss"] = np.array(losses, dtype=np.float32)
    assert int(optimizer.iterations.numpy()) == STEPS
    save_file(case, OUT, metadata={
        "keras": keras.__version__, "tensorflow": tf.__version__, "dtype": "float64",
    })
    print(f"{OUT}: losses {losses}", file=sys.stderr)


if __name__ == "__main__":
    main()
