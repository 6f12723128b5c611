"""kasp's benchmark harness: `make bench` (see bench/README.md). Never part of `make test`."""
