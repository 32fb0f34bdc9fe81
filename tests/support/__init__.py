"""What the tests stand on, apart from the tests themselves.

- ``server``: the observer, an unpooled connection that reports what the
  database server sees (sessions, transactions, kills), and test logins.
- ``pool_alias``: the ``pool_alias`` fixture's types, a pooled alias per test.
- ``waiting``: ``wait_until()``, the one polling loop; ``run_threads()`` and
  ``SessionSampler`` for concurrent tests.
- ``tcp_proxy``: a loopback proxy that forwards, stalls or refuses.
- ``private_server``: a PostgreSQL or MariaDB server of the test's own.
- ``pgbouncer``: a private PgBouncer; ``behind_pgbouncer`` runs the suite behind one.
- ``forking``: run work in a forked child, fork from C as uWSGI does.
- ``recipes``: the harness of tests/test_recipes.py (programs, their login,
  the sessions they hold).
"""
