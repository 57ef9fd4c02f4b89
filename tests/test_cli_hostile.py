"""The command line under hostile conditions, generated with hypothesis: every flag's
hostile value classes, closed standard streams, Ctrl-C at random moments, every kind of
export target, and a broker that accepts connections and never answers.

Bulk examples go through call_command (fast); a sample runs the real command in a
subprocess, so exit codes and stderr are the real ones. Subprocess runs use a database of
their own (a file for SQLite, a scratch database for PostgreSQL), migrated once."""

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import unicodedata
import uuid
from contextlib import closing, contextmanager
from io import StringIO
from pathlib import Path

import psycopg
import pytest
from celery import current_app
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import pools as kombu_pools

from chronicles.models import Character
from maintenance import operations
from maintenance.models import MaintenanceRun
from maintenance.operations.base import COMMON_PARAMETERS
from tests import factories
from tests.test_hostile_input import game_data

ROOT = Path(__file__).resolve().parent.parent
HYPOTHESIS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    # CI runs the same examples every time; a developer's run explores new ones.
    derandomize=os.environ.get("CI") == "true",
    database=None,
)
UNFINISHED = ("queued", "running")

# --- hostile values, by class -------------------------------------------------------

NON_ASCII_DIGITS = [
    chr(c)
    for c in range(0x80, 0x30000)
    if unicodedata.category(chr(c)) in ("Nd", "No") and chr(c).isprintable()
]
CONTROLS = [chr(c) for c in (*range(0, 32), 127, *range(0x80, 0xA0))] + [
    "\u200e",
    "\u200f",
    "\u202a",
    "\u202b",
    "\u202d",
    "\u202e",
    "\u2066",
    "\u2069",
    "\u2028",
    "\u2029",
    "\x1b[31m",
    "\x1b]0;owned\x07",
    "\r\n",
]


@st.composite
def non_ascii_number(draw):
    digits = draw(st.lists(st.sampled_from(NON_ASCII_DIGITS), min_size=1, max_size=4))
    ascii_part = draw(st.sampled_from(["", "1", "12", "-", "+"]))
    return ascii_part + "".join(digits) if draw(st.booleans()) else "".join(digits) + ascii_part


@st.composite
def with_control(draw):
    around = st.text(alphabet="abc123_,", max_size=6)
    return draw(around) + draw(st.sampled_from(CONTROLS)) + draw(around)


HOSTILE = {
    "non-ASCII digits": non_ascii_number(),
    "empty or separators only": st.from_regex(r"[ ,\t]{0,6}", fullmatch=True),
    "control characters": with_control(),
    "huge number": st.integers(min_value=20, max_value=5000).map(lambda n: "9" * n)
    | st.integers(min_value=20, max_value=60).map(lambda n: "-" + "9" * n),
}
VALUE_CLASS = st.sampled_from(sorted(HOSTILE))


def flag_cases():
    """(command, argv before the value, flag, usage exit code) for every flag that
    takes a value."""
    cases = []
    for operation in operations.all_operations():
        for parameter in (*operation.parameters, *COMMON_PARAMETERS):
            if parameter.kind != "bool":
                cases.append(("run_maintenance", [operation.name, "--inline"], parameter.flag, 2))
        cases.append(("run_maintenance", [operation.name, "--wait"], "--timeout", 2))
        cases.append(("run_maintenance", [operation.name, "--inline"], "--verbosity", 2))
    cases += [
        ("import_characters", ["missing.jsonl"], "--batch-size", 2),
        ("export_characters", ["--output", os.devnull], "--chronicle-id", 2),
        ("export_characters", ["--output", os.devnull], "--batch-size", 2),
        ("monitor_validation", [], "--period", 3),  # Nagios: 3 UNKNOWN is its usage code
    ]
    cases += [
        ("create_test_data", [], flag, 2)
        for flag in ("--seed", "--chronicles", "--characters", "--scenes", "--defect-rate")
    ]
    return cases


FLAG_CASES = flag_cases()
FLAG_CASE = st.sampled_from(FLAG_CASES)


def assert_one_clean_line(text):
    assert text.count("\n") <= 1, text
    line = text.rstrip("\n")
    assert line, "no message"
    assert "Traceback" not in line
    raw = [c for c in line if not c.isprintable()]
    assert not raw, f"raw control characters {raw!r} in {line!r}"


@pytest.mark.django_db
@settings(HYPOTHESIS, max_examples=150)
@given(case=FLAG_CASE, value_class=VALUE_CLASS, data=st.data())
def test_every_hostile_flag_value_is_one_clean_line_and_changes_nothing(
    case, value_class, data, tmp_path
):
    """(a) bulk, through call_command."""
    command, before, flag, code = case
    value = data.draw(HOSTILE[value_class], label="value")
    snapshot, runs = game_data(), MaintenanceRun.objects.count()

    with pytest.raises(CommandError) as raised:
        call_command(command, *before, f"{flag}={value}", stdout=StringIO(), stderr=StringIO())

    assert raised.value.returncode == code, str(raised.value)
    assert_one_clean_line(str(raised.value))
    assert MaintenanceRun.objects.count() == runs
    assert game_data() == snapshot


# --- a database for subprocesses ----------------------------------------------------


class ChildDatabase:
    """A migrated database that child processes use, and SQL on it from the test."""

    def __init__(self, url, vendor):
        self.url, self.vendor = url, vendor

    def env(self, **extra):
        env = {**os.environ, "DATABASE_URL": self.url, "PYTHONUNBUFFERED": "1", **extra}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        return env

    def sql(self, query):
        if self.vendor == "sqlite":
            with closing(sqlite3.connect(self.url.removeprefix("sqlite:///"), timeout=30)) as db:
                rows = db.execute(query).fetchall()
                db.commit()
                return rows
        with psycopg.connect(self.url, autocommit=True) as db:
            cursor = db.execute(query)
            return cursor.fetchall() if cursor.description else []

    def manage(self, *args, timeout=120, **kwargs):
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )

    def unfinished_runs(self):
        listed = ", ".join(f"'{s}'" for s in UNFINISHED)
        return self.sql(
            f"SELECT id, status FROM maintenance_maintenancerun WHERE status IN ({listed})"
        )

    def reset_runs(self):
        for table in ("maintenance_finding", "maintenance_runbatch", "maintenance_maintenancerun"):
            self.sql(f"DELETE FROM {table}")
        self.sql("UPDATE chronicles_scene SET archived_at = NULL")


@pytest.fixture(scope="module")
def child_db(tmp_path_factory):
    vendor = connection.vendor
    if vendor == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('child') / 'child.sqlite3'}"
        drop = None
    else:
        db = connection.settings_dict
        name = f"tg_cli_child_{uuid.uuid4().hex[:8]}"
        admin = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as server:
            server.execute(f'CREATE DATABASE "{name}"')
        url = f"{admin}/{name}"

        def drop():
            with psycopg.connect(f"{admin}/postgres", autocommit=True) as server:
                server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    child = ChildDatabase(url, vendor)
    try:
        for args in (
            ("migrate", "-v", "0"),
            ("create_test_data", "--seed", "5", "--chronicles", "3", "--characters", "200"),
        ):
            done = child.manage(*args, timeout=300)
            assert done.returncode == 0, done.stderr
        child.sql("UPDATE chronicles_scene SET archived_at = NULL")
        yield child
    finally:
        if drop is not None:
            drop()


def game_rows(child):
    return {
        table: child.sql(f"SELECT * FROM {table} ORDER BY id")
        for table in ("chronicles_character", "chronicles_scene", "chronicles_xpentry")
    }


@settings(HYPOTHESIS, max_examples=8)
@given(case=FLAG_CASE, value_class=VALUE_CLASS, data=st.data())
def test_a_sample_of_hostile_flag_values_in_a_real_process(child_db, case, value_class, data):
    """(a) sample, as a real process: exit code, exactly one line on stderr."""
    command, before, flag, code = case
    value = data.draw(HOSTILE[value_class].filter(lambda v: "\x00" not in v), label="value")
    runs = child_db.sql("SELECT count(*) FROM maintenance_maintenancerun")
    rows = game_rows(child_db)

    done = child_db.manage(command, *before, f"{flag}={value}")

    assert done.returncode == code, done.stderr
    assert_one_clean_line(done.stderr)
    assert child_db.sql("SELECT count(*) FROM maintenance_maintenancerun") == runs
    assert game_rows(child_db) == rows


# --- closed standard streams --------------------------------------------------------

STREAM_SETS = [frozenset(s) for s in ((), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2))]


def run_with_closed(child, argv, closed):
    """Run manage.py with the fds in `closed` closed (as `>&-` does), capturing the rest."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    code = (
        "import os, sys\n"
        f"for fd in {sorted(closed)!r}: os.close(fd)\n"
        f"os.execv(sys.executable, [sys.executable, 'manage.py', *{argv!r}])\n"
    )

    def wire():
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)

    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=child.env(),
        stdin=subprocess.DEVNULL,
        preexec_fn=wire,
        pass_fds=(out_w, err_w),
    )
    os.close(out_w)
    os.close(err_w)
    process.wait(timeout=120)
    with os.fdopen(out_r) as out, os.fdopen(err_r) as err:
        return process.returncode, out.read(), err.read()


# Every subset, exhaustively (8 real processes); the operation and --json vary with it.
CLOSED_CASES = [
    (closed, operation, json_output)
    for index, closed in enumerate(STREAM_SETS)
    for operation, json_output in [
        (("archive_old_scenes", "validate_data_integrity", "recalculate_xp")[index % 3], index % 2)
    ]
]


@pytest.mark.parametrize(("closed", "operation", "json_output"), CLOSED_CASES)
def test_closed_standard_streams_never_crash_or_leave_a_run_unfinished(
    child_db, closed, operation, json_output
):
    """(b) any subset of stdin, stdout, stderr closed."""
    argv = ["run_maintenance", operation, "--inline", "--dry-run"] + (
        ["--json"] if json_output else []
    )
    before = child_db.sql("SELECT count(*) FROM maintenance_maintenancerun")[0][0]

    code, out, err = run_with_closed(child_db, argv, closed)

    assert "Traceback" not in out + err and "Exception ignored" not in err
    runs = child_db.sql("SELECT status FROM maintenance_maintenancerun ORDER BY id DESC LIMIT 1")
    assert child_db.sql("SELECT count(*) FROM maintenance_maintenancerun")[0][0] == before + 1
    status = runs[0][0]
    assert code == {"succeeded": 0, "failed": 1, "skipped": 3}[status], (code, status, err)
    assert not child_db.unfinished_runs()
    if 1 not in closed and json_output:
        assert json.loads(out)["status"] == status


# --- Ctrl-C ---------------------------------------------------------------------------


def archived_scene_ids(child):
    return {
        row[0] for row in child.sql("SELECT id FROM chronicles_scene WHERE archived_at IS NOT NULL")
    }


def committed_changed_ids(child):
    ids = set()
    for (changed,) in child.sql("SELECT changed_ids FROM maintenance_runbatch"):
        ids.update(json.loads(changed) if isinstance(changed, str) else changed)
    return ids


def wait_until_running(child, process, limit=60):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and process.poll() is None:
        if child.sql("SELECT id FROM maintenance_maintenancerun WHERE status = 'running'"):
            return True
        time.sleep(0.02)
    return False


@settings(HYPOTHESIS, max_examples=int(os.environ.get("CTRL_C_EXAMPLES", "8")))
@given(delay=st.floats(min_value=0, max_value=1.5))
def test_ctrl_c_at_a_random_moment_exits_130_and_leaves_whole_batches(child_db, delay):
    """(c) SIGINT during an inline run that takes a few seconds."""
    child_db.reset_runs()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_maintenance", "archive_old_scenes", "--inline"]
        + ["--older-than-days", "1", "--batch-size", "4"],
        cwd=ROOT,
        env=child_db.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert wait_until_running(child_db, process)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)

    status = child_db.sql("SELECT status, error FROM maintenance_maintenancerun")
    if process.returncode == 0:  # it finished before the signal
        assert status[0][0] == "succeeded"
    else:
        assert process.returncode == 130, err
        assert_one_clean_line(err)
        assert "interrupted" in err
        # Stopped at its last committed batch: paused (resumable), or failed if the
        # signal came before the run had started.
        recorded, error = status[0]
        assert (recorded == "paused" and "paused by Ctrl-C" in error) or (
            recorded == "failed" and "interrupted" in error
        ), status
    assert not child_db.unfinished_runs()
    assert archived_scene_ids(child_db) == committed_changed_ids(child_db)


# --- export targets -----------------------------------------------------------------

TARGET_KINDS = [
    "new file",
    "existing file",
    "symlink to file",
    "dangling symlink",
    "symlink chain",
    "fifo with a reader",
    "/dev/null",
    "directory",
    "unwritable directory",
]


def make_target(kind, base, mode):
    """The --output path for `kind` under `base`, and the file that should get the data."""
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    if kind == "new file":
        return base / "out.jsonl", base / "out.jsonl"
    if kind == "existing file":
        (base / "out.jsonl").write_text("old\n")
        os.chmod(base / "out.jsonl", mode)
        return base / "out.jsonl", base / "out.jsonl"
    if kind in ("symlink to file", "dangling symlink", "symlink chain"):
        real = elsewhere / "real.jsonl"
        if kind != "dangling symlink":
            real.write_text("old\n")
            os.chmod(real, mode)
        (base / "link").symlink_to(real)
        if kind == "symlink chain":
            (base / "link2").symlink_to(base / "link")
            return base / "link2", real
        return base / "link", real
    if kind == "fifo with a reader":
        os.mkfifo(base / "fifo")
        return base / "fifo", None
    if kind == "/dev/null":
        return Path(os.devnull), None
    if kind == "directory":
        (base / "dir").mkdir()
        return base / "dir", None
    locked = base / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    return locked / "out.jsonl", locked / "out.jsonl"


@contextmanager
def fifo_reader(path):
    """Read a FIFO in a thread while the export writes it."""
    chunks = []

    def read():
        with open(path) as handle:
            chunks.append(handle.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    yield chunks
    thread.join(timeout=30)


def tree_state(paths):
    """lstat kind and mode of each path, and every name in their directories."""
    kinds = {}
    names = set()
    for path in paths:
        try:
            st_ = os.lstat(path)
            kinds[str(path)] = (stat.S_IFMT(st_.st_mode), stat.S_IMODE(st_.st_mode))
        except FileNotFoundError:
            kinds[str(path)] = None
        if path.parent != Path("/dev"):
            names |= {str(p) for p in path.parent.iterdir()} if path.parent.exists() else set()
    return kinds, names


@pytest.mark.django_db
@settings(HYPOTHESIS, max_examples=60)
@given(
    kind=st.sampled_from(TARGET_KINDS),
    mode=st.sampled_from([0o600, 0o640, 0o644, 0o444, 0o755, 0o604]),
)
def test_export_never_changes_what_its_target_is(tmp_path_factory, kind, mode):
    """(d) every kind of --output target."""
    if not Character.objects.exists():
        owner = get_user_model().objects.create(username="exporter")
        Character.objects.create(name="Exported", owner=owner, chronicle=factories.chronicle())
    base = tmp_path_factory.mktemp("export")
    output, data_file = make_target(kind, base, mode)
    watched = [output] + ([data_file] if data_file else [])
    before_kinds, before_names = tree_state(watched)
    expected = call_command_text("export_characters")

    try:
        if kind == "fifo with a reader":
            with fifo_reader(output) as chunks:
                call_command("export_characters", "--output", str(output), stderr=StringIO())
            assert chunks == [expected]
        else:
            call_command("export_characters", "--output", str(output), stderr=StringIO())
            failed = None
    except CommandError as error:
        failed = error
    finally:
        if kind == "unwritable directory":
            os.chmod(output.parent, 0o700)

    after_kinds, after_names = tree_state(watched)
    # The output path is what it was: a symlink stays a symlink, a FIFO a FIFO.
    for path in map(str, watched):
        if before_kinds[path] is not None:
            assert after_kinds[path] == before_kinds[path], (kind, path)
    assert not [n for n in after_names if n.endswith(".part")], after_names
    if kind in ("directory",):
        assert failed is not None and failed.returncode == 1
        assert_one_clean_line(str(failed))
    elif kind == "unwritable directory" and os.geteuid() != 0:
        assert failed is not None and failed.returncode == 1
        assert not data_file.exists()
    elif data_file is not None:
        assert data_file.read_text() == expected
        assert stat.S_ISREG(os.lstat(data_file).st_mode)
        if before_kinds.get(str(data_file)) is None:  # a new file gets the umask's mode
            umask = os.umask(0)
            os.umask(umask)
            assert stat.S_IMODE(os.stat(data_file).st_mode) == 0o666 & ~umask
        else:
            assert stat.S_IMODE(os.stat(data_file).st_mode) == mode


def call_command_text(*args):
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_export_to_a_reader_that_goes_away_ends_quietly(child_db):
    """`export_characters | head -1`: no traceback, no "Exception ignored", exit 141."""
    done = subprocess.run(
        f"{sys.executable} manage.py export_characters | head -1",
        shell=True,
        cwd=ROOT,
        env={**child_db.env(), "SHELL": "/bin/bash"},
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stdout.count("\n") == 1 and done.stderr == ""
    piped = subprocess.run(
        [
            "/bin/bash",
            "-c",
            f"{sys.executable} manage.py export_characters | head -c 10 >/dev/null;"
            " echo ${PIPESTATUS[0]}",
        ],
        cwd=ROOT,
        env=child_db.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert piped.stderr == "" and piped.stdout.strip() == "141"


# --- a broker that never answers ------------------------------------------------------


@contextmanager
def silent_broker(answer_ping=False):
    """A real TCP server that accepts connections and never answers (or answers only
    PING, so a check passes and the publish is what hangs)."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held, stop = [], threading.Event()

    def serve(conn):
        while not stop.is_set():
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            if answer_ping and b"PING" in data.upper():
                conn.sendall(b"+PONG\r\n")

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            held.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


def fresh_broker_pools():
    """Drop every pooled broker connection, so the next publish connects to the broker
    URL configured now (a closed pool must never be left for later tests)."""
    kombu_pools.reset()
    current_app._pool = None
    current_app.amqp._producer_pool = None


@pytest.fixture
def broker_url(monkeypatch):
    def use(url):
        # Celery reads CELERY_BROKER_URL from the environment before its own setting.
        monkeypatch.setenv("CELERY_BROKER_URL", url)
        monkeypatch.setattr(current_app.conf, "broker_url", url)
        fresh_broker_pools()

    yield use
    monkeypatch.undo()
    fresh_broker_pools()


@pytest.mark.django_db
@settings(HYPOTHESIS, max_examples=4)
@given(
    operation=st.sampled_from(["archive_old_scenes", "validate_data_integrity", "recalculate_xp"]),
    answer_ping=st.booleans(),
)
def test_a_silent_broker_fails_within_5s_and_leaves_nothing_queued(
    broker_url, operation, answer_ping
):
    """(e) both the check (silent) and the publish (answers PING, then silent)."""
    with silent_broker(answer_ping) as url:
        broker_url(url)
        started = time.monotonic()
        with pytest.raises(CommandError) as raised:
            call_command("run_maintenance", operation, stdout=StringIO(), stderr=StringIO())
        elapsed = time.monotonic() - started

    assert elapsed < 5, elapsed
    assert raised.value.returncode == 1
    assert_one_clean_line(str(raised.value))
    assert not MaintenanceRun.objects.filter(status__in=UNFINISHED).exists()


def test_a_silent_broker_as_a_real_process(child_db):
    """(e) the real exit code and stderr."""
    with silent_broker() as url:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "manage.py", "run_maintenance", "archive_old_scenes"],
            cwd=ROOT,
            env=child_db.env(CELERY_BROKER_URL=url),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        elapsed = time.monotonic() - started

    assert done.returncode == 1, done.stderr
    assert_one_clean_line(done.stderr)
    assert "unreachable" in done.stderr
    assert elapsed < 5 + 2  # + interpreter and Django start-up
    assert not child_db.unfinished_runs()


@pytest.mark.django_db
def test_wait_timeout_exits_1_and_json_shows_the_current_status(settings):
    """--wait --timeout with no worker: the run stays queued on the broker."""
    out = StringIO()
    started = time.monotonic()
    with pytest.raises(CommandError) as raised:
        call_command(
            "run_maintenance",
            "recalculate_xp",
            "--wait",
            "--timeout",
            "1",
            "--json",
            stdout=out,
            stderr=StringIO(),
        )
    assert time.monotonic() - started < 5
    assert raised.value.returncode == 1
    assert "still queued after 1s" in str(raised.value)
    summary = json.loads(out.getvalue())
    assert summary["status"] == "queued"
    _purge_broker()


def _purge_broker():
    with current_app.connection_for_write() as conn:
        conn.default_channel.client.delete("maintenance")


FAILING_RUN = """
import os, sys
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "worker.settings")
django.setup()
from maintenance import operations
def explode(*args, **kwargs):
    raise RuntimeError("disk on fire\\nsecond line")
operations.get("recalculate_xp").run_batch = explode
from django.core.management import execute_from_command_line
argv = ["manage.py", "run_maintenance", "recalculate_xp", "--inline", *sys.argv[1:]]
execute_from_command_line(argv)
"""


@pytest.mark.parametrize("verbosity", ["1", "3"])
def test_a_failed_run_is_one_line_and_its_traceback_goes_to_the_log(child_db, verbosity):
    done = subprocess.run(
        [sys.executable, "-c", FAILING_RUN, "-v", verbosity],
        cwd=ROOT,
        env=child_db.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 1
    assert not child_db.unfinished_runs()
    if verbosity == "1":
        assert_one_clean_line(done.stderr)
        assert "failed: RuntimeError: disk on fire" in done.stderr
    else:  # -v 3 shows the log, traceback included
        assert "Traceback" in done.stderr and "disk on fire" in done.stderr
