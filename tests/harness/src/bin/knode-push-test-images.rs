//! Pushes knode's test images (`knode/testimg`, `knode/busybox`) to a registry, for the README's
//! single-node cluster (`scripts/up.sh`) whose demo pod runs the test image.
//!
//! `knode-push-test-images 127.0.0.1:5000` prints the pushed references, one per line.

fn main() {
    let Some(registry) = std::env::args().nth(1) else {
        eprintln!("usage: knode-push-test-images <registry host:port>");
        std::process::exit(2);
    };
    knode_harness::install_crypto_provider();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("knode-push-test-images: {e}");
            std::process::exit(1);
        }
    };
    match rt.block_on(knode_harness::image::push_test_images(&registry)) {
        Ok(images) => {
            // A reader that stops early (`| head -1`) is not an error: no panic on a closed pipe.
            use std::io::Write;
            let mut out = std::io::stdout();
            let _ = writeln!(out, "{}", images.testimg.reference)
                .and_then(|()| writeln!(out, "{}", images.busybox.reference));
        }
        Err(e) => {
            eprintln!("knode-push-test-images: pushing to {registry}: {e}");
            std::process::exit(1);
        }
    }
}
