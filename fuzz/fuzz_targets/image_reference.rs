//! The image reference parser: no input panics it, and the normal form of
//! any reference it accepts parses back to the same reference (crid stores
//! and matches images by that form).
#![no_main]

use image::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let Ok(reference) = Reference::parse(text) else {
        return;
    };
    let normal = reference.to_string();
    let again = Reference::parse(&normal)
        .unwrap_or_else(|error| panic!("{text:?} parsed, its normal form {normal:?} not: {error}"));
    assert_eq!(again, reference, "{text:?} -> {normal:?}");
    assert_eq!(again.to_string(), normal);
    let _ = (reference.name(), reference.repo_tag());
});
