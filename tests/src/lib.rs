//! Fixtures for the system tests.
