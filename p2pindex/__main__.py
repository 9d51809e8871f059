"""`python -m p2pindex`: the same command line as the `p2pindex` script."""

from p2pindex.cli.main import main

if __name__ == "__main__":  # not when multiprocessing re-imports this module in a worker
    raise SystemExit(main())
