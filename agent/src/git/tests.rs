use super::*;
use std::process::Command;

/// A real repository with one commit, made with the git CLI as a user would.
fn user_repo() -> (tempfile::TempDir, Git) {
    let dir = tempfile::tempdir().unwrap();
    let sh = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    sh(&["init", "-q", "-b", "main"]);
    sh(&["config", "user.email", "u@example.com"]);
    sh(&["config", "user.name", "u"]);
    std::fs::write(dir.path().join("a.txt"), "one\ntwo\nthree\n").unwrap();
    std::fs::write(dir.path().join("b.txt"), "bee\n").unwrap();
    sh(&["add", "."]);
    sh(&["commit", "-q", "-m", "init"]);
    let git = Git::discover(dir.path()).unwrap();
    (dir, git)
}

fn write(path: &str, text: &str) -> FileWrite {
    FileWrite {
        path: path.into(),
        contents: Some(text.as_bytes().to_vec()),
    }
}

fn git_out(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn session_leaves_the_user_checkout_byte_identical() {
    let (dir, git) = user_repo();
    // An uncommitted edit of the user's must survive too.
    std::fs::write(dir.path().join("b.txt"), "user edit\n").unwrap();
    let status_before = git_out(dir.path(), &["status", "--porcelain"]);
    let head_before = git_out(dir.path(), &["rev-parse", "--symbolic-full-name", "HEAD"]);
    let index_before = std::fs::read(dir.path().join(".git/index")).unwrap();

    git.exclude_state_dir().unwrap();
    let base = git.head_commit().unwrap();
    git.set_branch(&trunk_branch("s1"), base, "start").unwrap();
    let branch = change_branch("s1", "c000001");
    let c = git
        .commit_on(
            base,
            &[write("a.txt", "ONE\n")],
            "change\n\nChange-Id: c000001",
        )
        .unwrap();
    git.set_branch(&branch, c, "apply").unwrap();
    let wt = git.add_worktree("c000001", &branch).unwrap();
    assert_eq!(std::fs::read_to_string(wt.join("a.txt")).unwrap(), "ONE\n");
    let merged = git.commit_with_tree_of(base, c, "merge").unwrap();
    git.set_branch(&trunk_branch("s1"), merged, "merge")
        .unwrap();
    git.remove_worktree("c000001").unwrap();

    assert_eq!(
        git_out(dir.path(), &["status", "--porcelain"]),
        status_before
    );
    assert_eq!(
        git_out(dir.path(), &["rev-parse", "--symbolic-full-name", "HEAD"]),
        head_before
    );
    assert_eq!(git.head_commit().unwrap(), base);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("a.txt")).unwrap(),
        "one\ntwo\nthree\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("b.txt")).unwrap(),
        "user edit\n"
    );
    assert_eq!(
        std::fs::read(dir.path().join(".git/index")).unwrap(),
        index_before
    );
    assert_eq!(
        git.read_file(merged, "a.txt").unwrap().unwrap(),
        b"ONE\n".to_vec()
    );
}

#[test]
fn commit_on_adds_edits_and_deletes_without_moving_refs() {
    let (_dir, git) = user_repo();
    let base = git.head_commit().unwrap();
    let c = git
        .commit_on(
            base,
            &[
                write("new/dir/c.txt", "sea\n"),
                FileWrite {
                    path: "b.txt".into(),
                    contents: None,
                },
            ],
            "edit",
        )
        .unwrap();
    assert_eq!(git.head_commit().unwrap(), base, "HEAD must not move");
    assert_eq!(
        git.read_file(c, "new/dir/c.txt").unwrap().unwrap(),
        b"sea\n"
    );
    assert_eq!(git.read_file(c, "b.txt").unwrap(), None);
    assert_eq!(
        git.read_file(c, "a.txt").unwrap().unwrap(),
        b"one\ntwo\nthree\n"
    );
}

#[test]
fn rejected_branch_is_kept_under_the_rejected_namespace() {
    let (_dir, git) = user_repo();
    let base = git.head_commit().unwrap();
    let branch = change_branch("s1", "cbad001");
    let c = git
        .commit_on(base, &[write("a.txt", "x\n")], "bad")
        .unwrap();
    git.set_branch(&branch, c, "apply").unwrap();
    git.reject_branch(&branch).unwrap();
    assert_eq!(git.branch_tip(&branch).unwrap(), None);
    let kept = git
        .repo()
        .find_reference(&format!("{REJECTED_PREFIX}{branch}"))
        .unwrap();
    assert_eq!(kept.target(), Some(c));
    // Again, as a resumed loop would: nothing to do, no error.
    git.reject_branch(&branch).unwrap();
}

#[test]
fn trunk_worktree_follows_its_branch_after_refresh() {
    let (_dir, git) = user_repo();
    let base = git.head_commit().unwrap();
    let trunk = trunk_branch("s2");
    git.set_branch(&trunk, base, "start").unwrap();
    let wt = git.add_worktree("trunk-s2", &trunk).unwrap();
    std::fs::write(wt.join("build-output"), "kept").unwrap();
    let next = git
        .commit_on(base, &[write("a.txt", "moved\n")], "m")
        .unwrap();
    git.set_branch(&trunk, next, "merge").unwrap();
    git.refresh_worktree(&wt).unwrap();
    assert_eq!(
        std::fs::read_to_string(wt.join("a.txt")).unwrap(),
        "moved\n"
    );
    assert_eq!(
        std::fs::read_to_string(wt.join("build-output")).unwrap(),
        "kept",
        "untracked build outputs survive a refresh"
    );
}

#[test]
fn stray_worktrees_are_listed_and_removed() {
    let (_dir, git) = user_repo();
    let base = git.head_commit().unwrap();
    let branch = change_branch("s1", "c1");
    git.set_branch(&branch, base, "x").unwrap();
    git.add_worktree("c1", &branch).unwrap();
    // A directory left by a kill between mkdir and registration.
    std::fs::create_dir_all(git.worktrees_dir().join("half")).unwrap();
    let names = git.loop_worktrees().unwrap();
    assert!(names.contains("c1") && names.contains("half"), "{names:?}");
    for n in &names {
        git.remove_worktree(n).unwrap();
    }
    assert!(git.loop_worktrees().unwrap().is_empty());
    assert!(git.repo().find_worktree("c1").is_err());
    // The branch can be checked out again once its worktree is gone.
    git.add_worktree("c1-again", &branch).unwrap();
}

#[test]
fn revert_applies_cleanly_when_later_changes_are_independent() {
    let (_dir, git) = user_repo();
    let base = git.head_commit().unwrap();
    let c1 = git
        .commit_on(
            base,
            &[write("a.txt", "ONE\ntwo\nthree\n")],
            "c1\n\nChange-Id: c111111",
        )
        .unwrap();
    let c2 = git
        .commit_on(c1, &[write("b.txt", "BEE\n")], "c2\n\nChange-Id: c222222")
        .unwrap();
    let r = git.revert_on(c1, c2, "revert c1").unwrap();
    assert_eq!(
        git.read_file(r, "a.txt").unwrap().unwrap(),
        b"one\ntwo\nthree\n"
    );
    assert_eq!(git.read_file(r, "b.txt").unwrap().unwrap(), b"BEE\n");
}

#[test]
fn conflicting_revert_names_the_later_change_and_writes_nothing() {
    let (_dir, git) = user_repo();
    let base = git.head_commit().unwrap();
    let c1 = git
        .commit_on(
            base,
            &[write("a.txt", "ONE\ntwo\nthree\n")],
            "c1\n\nChange-Id: c111111",
        )
        .unwrap();
    let c2 = git
        .commit_on(c1, &[write("b.txt", "BEE\n")], "c2\n\nChange-Id: c222222")
        .unwrap();
    let c3 = git
        .commit_on(
            c2,
            &[write("a.txt", "ONE!\ntwo\nthree\n")],
            "c3\n\nChange-Id: c333333",
        )
        .unwrap();
    match git.revert_on(c1, c3, "revert c1") {
        Err(GitError::RevertConflict {
            paths,
            later_changes,
            ..
        }) => {
            assert_eq!(paths, vec!["a.txt".to_string()]);
            assert_eq!(later_changes, vec!["c333333".to_string()]);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[test]
fn discover_from_a_subdirectory_and_reject_non_repositories() {
    let (dir, _git) = user_repo();
    std::fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
    let git = Git::discover(&dir.path().join("sub/deeper")).unwrap();
    assert_eq!(git.root(), dir.path().canonicalize().unwrap());
    let outside = tempfile::tempdir().unwrap();
    let err = Git::discover(outside.path()).err().unwrap();
    assert!(
        err.to_string().contains("not inside a git repository"),
        "{err}"
    );
}

#[test]
fn exclude_state_dir_is_idempotent() {
    let (dir, git) = user_repo();
    git.exclude_state_dir().unwrap();
    git.exclude_state_dir().unwrap();
    let text = std::fs::read_to_string(dir.path().join(".git/info/exclude")).unwrap();
    assert_eq!(text.matches("/.agentloop/").count(), 1);
    std::fs::create_dir_all(dir.path().join(".agentloop")).unwrap();
    std::fs::write(dir.path().join(".agentloop/x"), "y").unwrap();
    assert_eq!(git_out(dir.path(), &["status", "--porcelain"]), "");
}

#[test]
fn change_id_trailer_is_read_from_the_message_end() {
    assert_eq!(
        change_id_trailer("t\n\nbody\n\nChange-Id: c7f3a2b\nLedger-Head: 4:ab"),
        Some("c7f3a2b".into())
    );
    assert_eq!(change_id_trailer("no trailer"), None);
}

#[test]
fn list_files_walks_nested_directories() {
    let (_dir, git) = user_repo();
    let base = git.head_commit().unwrap();
    let c = git
        .commit_on(base, &[write("x/y/z.txt", "z")], "nested")
        .unwrap();
    let mut files = git.list_files(c).unwrap();
    files.sort();
    assert_eq!(files, vec!["a.txt", "b.txt", "x/y/z.txt"]);
}

#[test]
fn a_half_created_worktree_is_cleaned_up_and_can_be_recreated() {
    let (_dir, git) = user_repo();
    let base = git.head_commit().unwrap();
    let branch = change_branch("s1", "c2");
    git.set_branch(&branch, base, "x").unwrap();
    // What a kill inside `git worktree add` leaves: the admin directory, nothing else.
    std::fs::create_dir_all(git.repo().path().join("worktrees/c2")).unwrap();
    assert!(git.loop_worktrees().unwrap().contains("c2"));
    let path = git.add_worktree("c2", &branch).unwrap();
    assert!(path.join("a.txt").exists());
}

#[test]
fn stale_ref_locks_in_our_namespaces_are_removed_and_the_users_kept() {
    let (dir, git) = user_repo();
    let base = git.head_commit().unwrap();
    let ours = dir
        .path()
        .join(".git/refs/heads/agentloop/changes/s1/c3.lock");
    std::fs::create_dir_all(ours.parent().unwrap()).unwrap();
    std::fs::write(&ours, "").unwrap();
    let users = dir.path().join(".git/refs/heads/feature.lock");
    std::fs::write(&users, "").unwrap();
    assert_eq!(git.clear_stale_locks().unwrap(), 1);
    assert!(!ours.exists() && users.exists());
    git.set_branch(&change_branch("s1", "c3"), base, "after the kill")
        .unwrap();
}

#[test]
fn a_stale_index_lock_in_a_loop_worktree_is_removed_and_the_users_kept() {
    let (dir, git) = user_repo();
    let base = git.head_commit().unwrap();
    git.set_branch(&change_branch("s1", "c4"), base, "branch")
        .unwrap();
    let wt = git.add_worktree("c4", &change_branch("s1", "c4")).unwrap();
    // What a SIGKILL during an index write leaves behind.
    let lock = dir.path().join(".git/worktrees/c4/index.lock");
    std::fs::write(&lock, "").unwrap();
    let users = dir.path().join(".git/index.lock");
    std::fs::write(&users, "").unwrap();
    assert_eq!(git.clear_stale_locks().unwrap(), 1);
    assert!(!lock.exists() && users.exists());
    std::fs::remove_file(&users).unwrap();
    git.refresh_worktree(&wt).unwrap();
}
