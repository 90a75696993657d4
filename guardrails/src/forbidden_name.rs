//! Names editable Rust code may not use at all, wherever they appear as an identifier.
//!
//! Refusing the *name* rather than a path closes renames as a class: `use std::include_str as
//! t;`, `pub use core::env as e;` and a macro handed `include_str` as an argument all have to
//! spell the original name somewhere in the file, and that spelling is refused. Strings and
//! comments are single tokens, so mentioning a name there is fine.

/// One class of forbidden names and why, for the rejection message.
struct Class {
    names: &'static [&'static str],
    why: &'static str,
}

const CLASSES: &[Class] = &[
    Class {
        names: &[
            "include",
            "include_str",
            "include_bytes",
            "env",
            "option_env",
            "asm",
            "global_asm",
            "naked_asm",
            "llvm_asm",
        ],
        why: "reads files or the environment at compile time, or emits assembly, under any name",
    },
    Class {
        names: &["macro_rules", "macro"],
        why: "a macro definition can receive a forbidden macro's name as an identifier",
    },
    Class {
        names: &[
            "static",
            "thread_local",
            "Cell",
            "RefCell",
            "UnsafeCell",
            "SyncUnsafeCell",
            "OnceCell",
            "OnceLock",
            "LazyCell",
            "LazyLock",
            "Once",
            "Mutex",
            "RwLock",
            "ReentrantLock",
            "Condvar",
            "atomic",
            "mpsc",
            "mpmc",
        ],
        why: "state that outlives a call lets a model adapt to the evaluation stream",
    },
    Class {
        names: &["stdin", "Stdin", "StdinLock"],
        why: "reads the process's input",
    },
    Class {
        names: &[
            "Path",
            "PathBuf",
            "exists",
            "try_exists",
            "metadata",
            "symlink_metadata",
            "read_dir",
            "read_link",
            "canonicalize",
            "is_file",
            "is_dir",
            "is_symlink",
        ],
        why: "a path-to-file API",
    },
    Class {
        names: &[
            "safetensors",
            "npy",
            "pickle",
            "ggml_file",
            "gguf_file",
            "imatrix_file",
            "save_safetensors",
            "read_npy",
            "read_npz",
            "read_npz_by_name",
            "write_npy",
            "write_npz",
            "load_imatrix",
            "read_pth_tensor_info",
            "read_all",
            "read_all_with_key",
            "MmapedSafetensors",
            "MmapedFile",
            "NpzTensors",
            "PthTensors",
            "ShardedSafeTensors",
            "from_mmaped_safetensors",
            "from_npz",
            "from_pth",
            "from_pth_with_state",
        ],
        why: "candle reads or writes files through it",
    },
];

/// Why `name` is refused, or `None` when it is not.
pub fn reason(name: &str) -> Option<&'static str> {
    if name.starts_with("Atomic") {
        return Some("state that outlives a call lets a model adapt to the evaluation stream");
    }
    CLASSES
        .iter()
        .find(|class| class.names.contains(&name))
        .map(|class| class.why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_answers_and_ordinary_names_pass() {
        for name in [
            "include_str",
            "macro_rules",
            "OnceLock",
            "AtomicU64",
            "stdin",
            "Path",
            "read_npy",
        ] {
            assert!(reason(name).is_some(), "{name}");
        }
        for name in [
            "Tensor", "forward", "lr", "width", "HashMap", "Arc", "statics",
        ] {
            assert_eq!(reason(name), None, "{name}");
        }
    }
}
