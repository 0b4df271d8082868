//! The store: reloads that apply whole or not at all, and the directory watcher.

use std::path::Path;
use std::time::Duration;

use super::*;

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const GOOD: &str = "rules:\n  - name: a\n    hosts: [a.example.com]\n";

#[test]
fn reload_applies_changes_and_keeps_the_old_policy_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", GOOD);
    let store = PolicyStore::open(dir.path().to_owned()).unwrap();
    assert_eq!(store.version(), 1);
    assert_eq!(store.reload().unwrap(), 1, "nothing changed, same version");

    write(
        dir.path(),
        "b.yaml",
        "rules:\n  - name: b\n    hosts: [b.example.com]\n",
    );
    assert_eq!(store.reload().unwrap(), 2);
    assert_eq!(store.current().rules().len(), 2);

    write(
        dir.path(),
        "c.yaml",
        "rules:\n  - name: c\n    hosts: [b.example.com]\n    ports: [0]\n",
    );
    let errors = store.reload().unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert!(
        errors
            .to_string()
            .ends_with("c.yaml:4: rules[0].ports[0]: 0 is not a port (1-65535)"),
        "{errors}"
    );
    assert_eq!(store.version(), 2);
    assert_eq!(store.current().rules().len(), 2);
}

#[test]
fn open_fails_on_an_unreadable_directory_naming_it() {
    let missing = std::env::temp_dir().join("egress-policy-does-not-exist");
    let errors = PolicyStore::open(missing.clone()).unwrap_err();
    assert!(
        errors
            .to_string()
            .starts_with(&missing.display().to_string()),
        "{errors}"
    );
}

#[test]
fn from_policy_serves_it_and_replace_bumps_the_version() {
    let store = PolicyStore::from_policy(Policy::empty());
    let mut changes = store.subscribe();
    assert!(store.reload().is_err());
    assert_eq!(store.replace(Policy::empty()), 2);
    assert!(changes.has_changed().unwrap());
    assert_eq!(*changes.borrow_and_update(), 2);
}

#[tokio::test]
async fn the_watcher_applies_an_edit_and_refuses_an_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", GOOD);
    let store = PolicyStore::open(dir.path().to_owned()).unwrap();
    let mut changes = store.subscribe();
    let watcher = store.watch().unwrap();

    write(
        dir.path(),
        "a.yaml",
        &GOOD.replace("a.example.com", "z.example.com"),
    );
    tokio::time::timeout(Duration::from_secs(10), changes.changed())
        .await
        .expect("the edit is applied within 10 s")
        .unwrap();
    assert_eq!(*changes.borrow_and_update(), 2);
    let policy = store.current();
    assert_eq!(policy.rules()[0].hosts[0].to_string(), "z.example.com");

    // An invalid edit, then a valid one: only the valid one is applied.
    write(dir.path(), "a.yaml", "rules: [");
    write(
        dir.path(),
        "b.yaml",
        "rules:\n  - name: b\n    hosts: [b.example.com]\n",
    );
    write(dir.path(), "a.yaml", GOOD);
    tokio::time::timeout(Duration::from_secs(10), async {
        while store.current().rules().len() != 2 {
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("the fixed set is applied within 10 s");

    drop(watcher);
}

#[tokio::test]
async fn the_watcher_follows_a_configmap_data_symlink_swap() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("..v1")).unwrap();
    write(&d.join("..v1"), "a.yaml", GOOD);
    symlink("..v1", d.join("..data")).unwrap();
    symlink("..data/a.yaml", d.join("a.yaml")).unwrap();
    let store = PolicyStore::open(d.to_owned()).unwrap();
    let mut changes = store.subscribe();
    let _watcher = store.watch().unwrap();

    // What the kubelet does: a new timestamped directory, then an atomic rename of a
    // fresh `..data` link over the old one; `a.yaml` itself never changes.
    std::fs::create_dir(d.join("..v2")).unwrap();
    write(
        &d.join("..v2"),
        "a.yaml",
        &GOOD.replace("a.example.com", "v2.example.com"),
    );
    symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();

    tokio::time::timeout(Duration::from_secs(10), changes.changed())
        .await
        .expect("the swap is applied within 10 s")
        .unwrap();
    let host = store.current().rules()[0].hosts[0].to_string();
    assert_eq!(host, "v2.example.com");
}

#[test]
fn kept_versions_share_the_text_of_a_file_that_did_not_change() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "big.yaml", GOOD);
    write(
        dir.path(),
        "small.yaml",
        "rules:\n  - {name: s1, hosts: [s1.example.com]}\n",
    );
    let store = PolicyStore::open(dir.path().to_owned()).unwrap();
    let before = store.current();
    write(
        dir.path(),
        "small.yaml",
        "rules:\n  - {name: s2, hosts: [s2.example.com]}\n",
    );
    assert_eq!(store.reload().unwrap(), 2);
    let after = store.current();
    let text = |p: &Policy, name: &str| {
        let file = p.sources().iter().find(|f| f.name.ends_with(name)).unwrap();
        std::sync::Arc::clone(&file.text)
    };
    // One copy of the unchanged file for both versions, the policy in force and history.
    assert!(std::sync::Arc::ptr_eq(
        &text(&before, "big.yaml"),
        &text(&after, "big.yaml")
    ));
    assert!(!std::sync::Arc::ptr_eq(
        &text(&before, "small.yaml"),
        &text(&after, "small.yaml")
    ));
    let kept = store.kept(1).unwrap().unwrap();
    let big = kept.iter().find(|f| f.name.ends_with("big.yaml")).unwrap();
    assert!(std::sync::Arc::ptr_eq(&big.text, &text(&after, "big.yaml")));
}
