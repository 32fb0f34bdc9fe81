"""Two calls of the MySQL C client library that mysqlclient does not expose.

mysqlclient links against libmariadb (or MySQL's libmysqlclient) and hands out
its ``MYSQL*`` handle through ``_get_native_connection()``. Through it we read
the server status flags of the last reply (is a transaction open? no round
trip) and send COM_RESET_CONNECTION, the server's own session reset. Each call
degrades cleanly when the library lacks the symbol.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

# enum mariadb_value in mariadb's mysql.h; stable since Connector/C 3.0.
_MARIADB_CONNECTION_SERVER_STATUS = 30
_SERVER_STATUS_IN_TRANS = 0x0001


@functools.cache
def _library() -> ctypes.CDLL | None:
    try:
        from MySQLdb import _mysql
    except ImportError:  # pragma: no cover - mysqlclient is the MySQL backend's driver
        return None
    # dlsym() on the extension also searches the client library it links to.
    return ctypes.CDLL(_mysql.__file__)


@functools.cache
def _function(name: str, argtypes: tuple[Any, ...]) -> Any:
    library = _library()
    function = getattr(library, name, None) if library is not None else None
    if function is not None:
        function.argtypes = list(argtypes)
        function.restype = ctypes.c_int
    return function


# Private prototypes: setting argtypes on ctypes.pythonapi would change them for
# every other library in the process.
_capsule_name = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(
    ("PyCapsule_GetName", ctypes.pythonapi)
)
_capsule_pointer = ctypes.PYFUNCTYPE(
    ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p
)(("PyCapsule_GetPointer", ctypes.pythonapi))


def _handle(connection: Any) -> int:
    capsule = connection._get_native_connection()
    pointer: int = _capsule_pointer(capsule, _capsule_name(capsule))
    return pointer


#: Where a connection keeps its status probe: the arguments of one C call,
#: made once (its MYSQL* handle lives as long as the connection object).
_PROBE = "_sapool_status_probe"


def in_transaction(connection: Any) -> bool | None:
    """Whether the server said a transaction is open; None when we cannot tell.

    Called at every return: one C call with arguments made at the first.
    """
    try:
        probe = getattr(connection, _PROBE)
    except AttributeError:
        probe = _make_probe(connection)
    if probe is None:
        return None
    get_infov, arguments, status = probe
    if get_infov(*arguments):
        return None
    return bool(status.value & _SERVER_STATUS_IN_TRANS)


def _make_probe(connection: Any) -> tuple[Any, tuple[Any, ...], Any] | None:
    library = _library()
    get_infov = getattr(library, "mariadb_get_infov", None) if library else None
    if get_infov is None or not hasattr(connection, "_get_native_connection"):
        probe = None
    else:
        # Our own function object, typed by its arguments: the handle is a
        # c_void_p, the status a c_uint passed by reference.
        get_infov = type(get_infov)(("mariadb_get_infov", library))
        get_infov.restype = ctypes.c_int
        status = ctypes.c_uint(0)
        handle = ctypes.c_void_p(_handle(connection))
        arguments = (handle, _MARIADB_CONNECTION_SERVER_STATUS, ctypes.byref(status))
        probe = get_infov, arguments, status
    setattr(connection, _PROBE, probe)
    return probe


def can_reset() -> bool:
    """Whether COM_RESET_CONNECTION can be sent through this mysqlclient build."""
    return _function("mysql_reset_connection", (ctypes.c_void_p,)) is not None


def reset_connection(connection: Any) -> None:
    """Send COM_RESET_CONNECTION: a fresh session on the same socket (DISCARD ALL)."""
    reset = _function("mysql_reset_connection", (ctypes.c_void_p,))
    if reset is None:
        raise RuntimeError("this mysqlclient build has no mysql_reset_connection()")
    if reset(_handle(connection)):
        from MySQLdb import OperationalError

        raise OperationalError(connection.errno(), connection.error())
