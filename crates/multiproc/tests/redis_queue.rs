//! Redis queue tests (written below).
