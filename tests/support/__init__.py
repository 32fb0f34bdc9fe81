"""What the tests stand on, apart from the tests themselves.

- ``fixtures``: the fixtures every server test may ask for (``pool_alias``,
  ``observer``, ``proxy``, ``second_login``, ``only_private_servers``) and
  ``private_server_or_skip()``; a plugin of tests/conftest.py.
- ``server``: the observer, an unpooled connection that reports what the
  database server sees (sessions, transactions, kills), ``Peak``, test logins
  (``create_login``, ``server_login``), ``query_one``/``query_value``,
  ``backend_id``.
- ``pool_alias``: the ``pool_alias`` fixture's types, a pooled alias per
  test; ``registered()`` for ``atomic()`` on a wrapper of the test's own.
- ``waiting``: ``wait_until()``, the one polling loop; ``run_threads()`` and
  ``threads_running()`` for concurrent tests.
- ``figures``: the ``[fault]`` line a fault scenario prints.
- ``stand_ins``: ``Interrupted``, for KeyboardInterrupt or SystemExit.
- ``tcp_proxy``: a loopback proxy that forwards, stalls or refuses.
- ``private_server``: a PostgreSQL or MariaDB server of the test's own.
- ``failover``: the application on private servers that switch over or
  restart (tests/test_failover.py, tests/test_restart.py).
- ``credentials``: the login, traffic and token stand-in of
  tests/test_credentials.py.
- ``pgbouncer``: a private PgBouncer; ``behind_pgbouncer`` runs the suite behind one.
- ``forking``: run work in a forked child, fork from C as uWSGI does.
- ``recipes``: the harness of tests/test_recipes.py (programs, their login,
  the sessions they hold); a plugin of tests/conftest.py.
"""
