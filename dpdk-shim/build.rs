//! Compile `csrc/shim.c` against the system DPDK found by pkg-config and
//! link DPDK. (The crates.io `dpdk-sys` does not build against Debian's DPDK.)
use std::process::Command;

fn pkg(args: &[&str]) -> Vec<String> {
    let out =
        Command::new("pkg-config").args(args).arg("libdpdk").output().expect("pkg-config is needed to build dpdk-shim");
    assert!(
        out.status.success(),
        "pkg-config cannot find libdpdk: install Debian's libdpdk-dev (./deploy/test.sh does). {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().split_whitespace().map(str::to_string).collect()
}

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.c");
    let mut b = cc::Build::new();
    b.file("csrc/shim.c").warnings(false).opt_level(3);
    let cflags = pkg(&["--cflags"]);
    let mut i = 0;
    while i < cflags.len() {
        let f = &cflags[i];
        if f == "-include" {
            b.flag("-include").flag(&cflags[i + 1]);
            i += 2;
            continue;
        }
        b.flag(f);
        i += 1;
    }
    b.compile("wirefold_dpdk_shim");
    for f in pkg(&["--libs"]) {
        if let Some(dir) = f.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = f.strip_prefix("-l") {
            println!("cargo:rustc-link-lib={lib}");
        } else {
            println!("cargo:rustc-link-arg={f}");
        }
    }
}
