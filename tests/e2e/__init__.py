"""End-to-end tests: real ``python -m service`` processes driven over HTTP."""
