"""The deploy example: a small Flask app that says where it runs.

It listens on NOMAD_IP_http:NOMAD_PORT_http under Nomad (127.0.0.1:8080
elsewhere) and stops cleanly on SIGINT, Nomad's default kill_signal."""
import os
import sys

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return (
        "hello from a tote bundle under Nomad\n"
        f"task {os.environ.get('NOMAD_TASK_NAME', '-')} in {os.environ.get('NOMAD_TASK_DIR', '-')}\n"
        f"uid {os.getuid()} pid {os.getpid()} parent {os.getppid()}\n"
        f"python {sys.version.split()[0]} at {sys.executable}\n"
        f"HOME {os.environ.get('HOME', '-')} TMPDIR {os.environ.get('TMPDIR', '-')}\n"
        f"/dev/fuse {'present' if os.path.exists('/dev/fuse') else 'absent'}\n"
    )


if __name__ == "__main__":
    host = os.environ.get("NOMAD_IP_http", "127.0.0.1")
    port = int(os.environ.get("NOMAD_PORT_http", "8080"))
    app.run(host=host, port=port)
    print("hello-flask: stopped", flush=True)
