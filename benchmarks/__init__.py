"""shmkit's benchmark suite: shmkit side by side with what users would pick instead.

Run it with ``shmkit bench`` or ``python -m benchmarks`` (``--help`` lists the options).
Every IPC measurement runs real processes started with the ``spawn`` method on both
sides; each figure is the median of several repetitions after a warm-up, printed with
its min and max and its ratio to the best anchor measured in the same run.

Layout:

- ``harness``    cases, spawned workers, calibration, repetitions, statistics
- ``scenarios``  one module per area (queue, ping-pong, lock, counter, dict, hand-off,
                 board, zone, redis); each declares its scenarios and their cases
- ``report``     text tables, the summary, JSON and the Markdown page
- ``plot``       the PNG chart (matplotlib, optional)
- ``machine``    machine description and versions of every anchor package
- ``redis_server``  a private redis-server on 127.0.0.1 for the Redis anchors

See docs/benchmarks.md for what each scenario measures and the latest run.
"""
