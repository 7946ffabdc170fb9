//! The sandbox's bubblewrap arguments and configuration, in memory (the real sandbox is
//! tested end to end in `app/tests/sandbox.rs`).

use super::*;

fn args_of(sandbox: &Sandbox) -> Vec<String> {
    bwrap_args(sandbox, Path::new("/opt/np/nullport"))
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

fn position(args: &[String], window: &[&str]) -> usize {
    args.windows(window.len())
        .position(|w| w == window)
        .unwrap_or_else(|| panic!("{window:?} not in {args:?}"))
}

#[test]
fn the_system_is_read_only_and_etc_is_never_bound_whole() {
    let args = args_of(&Sandbox::default());
    assert!(args.windows(3).any(|w| w == ["--ro-bind", "/usr", "/usr"]));
    let binds = ["--bind", "--ro-bind", "--ro-bind-try", "--bind-try"];
    assert!(
        !args
            .windows(2)
            .any(|w| binds.contains(&w[0].as_str()) && (w[1] == "/" || w[1] == "/etc"))
    );
    assert!(
        !args
            .iter()
            .any(|a| a.contains("shadow") || a.contains("sudoers"))
    );
    assert!(args.contains(&"--unshare-net".to_owned()));
    assert!(args.contains(&"--die-with-parent".to_owned()));
    assert!(args.contains(&"--new-session".to_owned()));
}

#[test]
fn net_shares_the_network_and_binds_resolv_conf() {
    let args = args_of(&Sandbox {
        net: true,
        ..Sandbox::default()
    });
    assert!(!args.contains(&"--unshare-net".to_owned()));
    position(
        &args,
        &["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"],
    );
}

#[test]
fn operator_paths_are_bound_after_tmp_with_traversable_parents() {
    let sandbox = Sandbox {
        ro: vec![PathBuf::from("/srv/code/lib")],
        rw: vec![PathBuf::from("/tmp/job/out")],
        ..Sandbox::default()
    };
    let args = args_of(&sandbox);
    let tmpfs = position(&args, &["--tmpfs", "/tmp"]);
    let parent = position(&args, &["--perms", "0755", "--dir", "/tmp/job"]);
    let bind = position(&args, &["--bind", "/tmp/job/out", "/tmp/job/out"]);
    assert!(tmpfs < parent && parent < bind, "{args:?}");
    let srv = position(&args, &["--perms", "0755", "--dir", "/srv"]);
    let ro = position(&args, &["--ro-bind", "/srv/code/lib", "/srv/code/lib"]);
    assert!(srv < ro);
    // The launcher, outside system directories, is bound read-only after its parents.
    let opt = position(&args, &["--perms", "0755", "--dir", "/opt/np"]);
    let me = position(
        &args,
        &["--ro-bind", "/opt/np/nullport", "/opt/np/nullport"],
    );
    assert!(opt < me);
}

#[test]
fn the_config_table_round_trips_with_defaults_and_rejects_unknown_keys() {
    let s: Sandbox = toml::from_str("ro = [\"/srv\"]\nlevel = \"no-landlock\"").unwrap();
    assert_eq!(s.ro, vec![PathBuf::from("/srv")]);
    assert_eq!(s.level, Level::NoLandlock);
    assert_eq!(s.memory_mib, 2048);
    assert!(!s.net);
    let back: Sandbox = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    assert!(toml::from_str::<Sandbox>("network = true").is_err());
    assert!(toml::from_str::<Sandbox>("level = \"none\"").is_err());
}

#[test]
fn the_seccomp_filters_compile_for_this_machine() {
    assert!(!inside::never_filter().unwrap().is_empty());
    assert!(!inside::socket_filter().unwrap().is_empty());
}
