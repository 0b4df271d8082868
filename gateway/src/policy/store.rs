//! The policy in force: loaded from the policy directory, swapped atomically on change.
