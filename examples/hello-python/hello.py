"""The demo app: a small Python program that uses the standard library and
a C extension (sqlite3), to show a whole interpreter travelling in one file."""
import os
import platform
import sqlite3
import sys

db = sqlite3.connect(":memory:")
db.execute("create table t (x integer)")
db.executemany("insert into t values (?)", [(i,) for i in range(1000)])
(total,) = db.execute("select sum(x) from t").fetchone()

print("hello from a tote bundle")
print(f"  python {platform.python_version()} at {sys.executable}")
print(f"  sqlite {sqlite3.sqlite_version}: sum(0..999) = {total}")
print(f"  arguments: {sys.argv[1:]}")
print(f"  working directory: {os.getcwd()}")
print(f"  running as uid {os.getuid()}")
