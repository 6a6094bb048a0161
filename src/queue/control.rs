//! The operator's commands on a running daemon: a Unix socket in the Spoolbase, a line in and
//! the answer out. Written by the next commit.
