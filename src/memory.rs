//! What the machine can hold, and estimates of what training and a data set will allocate, so a
//! size too large for memory is an error naming its source before anything is allocated.

use crate::model::Architecture;

/// Bytes of memory available to a new allocation now: MemAvailable from /proc/meminfo, else
/// the free physical pages.
pub fn available_bytes() -> u64 {
    let from_meminfo = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        });
    from_meminfo.unwrap_or_else(|| {
        // SAFETY: sysconf only reads system constants.
        let (pages, page) = unsafe {
            (
                libc::sysconf(libc::_SC_AVPHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        (pages.max(0) as u64).saturating_mul(page.max(0) as u64)
    })
}

/// Ok when `bytes` (None: too many to count) fit in the available memory; otherwise the reason,
/// saying what needs them.
pub fn check_fits(what: &str, bytes: Option<u128>) -> Result<(), String> {
    let available = available_bytes();
    match bytes {
        Some(bytes) if bytes <= u128::from(available) => Ok(()),
        Some(bytes) => Err(format!(
            "{what} would take an estimated {}, but {} of memory is available",
            human(bytes),
            human(u128::from(available))
        )),
        None => Err(format!(
            "{what} would take more memory than any machine has ({} is available)",
            human(u128::from(available))
        )),
    }
}

/// Estimated bytes a network for `batch` images of `size` x `size` allocates for training, from
/// above: every layer's output and two gradient buffers of the largest (the layer graph stores
/// fewer: neither the upsampled tensors nor, in training, conv1's output).
/// None when `size` does not fit the architecture or the count overflows.
pub fn network_bytes(architecture: &Architecture, size: usize, batch: usize) -> Option<u128> {
    if size > 1 << 30 {
        return None;
    }
    let shapes = architecture.shapes(size, size).ok()?;
    // Below 2^30 pixels a side, no product here comes near u128's range.
    let lens: Vec<u128> = shapes
        .iter()
        .map(|s| s.height as u128 * s.width as u128 * s.channels as u128)
        .collect();
    let largest = lens.iter().copied().max()?;
    let per_image = lens.iter().sum::<u128>() + 2 * largest;
    per_image
        .checked_mul(u128::try_from(batch).ok()?)?
        .checked_mul(4)
}

/// Bytes of `images` images of `size` x `size` float32 pixels.
pub fn dataset_bytes(images: usize, size: usize) -> Option<u128> {
    (images as u128)
        .checked_mul(size as u128)?
        .checked_mul(size as u128)?
        .checked_mul(4)
}

/// Bytes in a unit a person reads: 1.5 GiB, 320 MiB, 12 KiB.
pub fn human(bytes: u128) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} bytes"),
        _ => format!("{value:.1} {}", units[unit]),
    }
}
