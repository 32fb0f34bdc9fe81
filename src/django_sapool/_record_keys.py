"""What the pool keeps on SQLAlchemy's connection records, by key.

``record.info`` lives as long as one physical connection; ``record_info``
outlives reconnects of one pool slot.
"""

from __future__ import annotations

#: info: Django's per-connection setup has run on this physical connection
#: (cleared by a "discard" reset, which undoes it).
INITIALISED = "django_sapool.initialised"
#: info: when release() gave the connection back (time.monotonic()), kept only
#: when pre_ping is a number of seconds: how long it has sat idle.
RETURNED = "django_sapool.returned"
#: info, only while a listener is registered: (listeners, when lent).
LENT_AT = "django_sapool.lent_at"
#: info: (borrowing thread's ident, when lent), for the report an exhausted
#: pool gives of who holds its connections.
BORROWED = "django_sapool.borrowed"
#: record_info: this slot has had a connection.
OPENED = "django_sapool.opened"
#: record_info: the slot's connection was invalidated, so its next connection
#: replaces a broken one rather than recycling an old one.
INVALIDATED = "django_sapool.invalidated"
