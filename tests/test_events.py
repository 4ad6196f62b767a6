"""The events log as Ray workers write it: directly where the job folder is visible,
through the driver's sink actor where it is not."""

from jobs import events


class FakeSink:
    """Stands in for the EventSink actor handle: `.append.remote(line)` records the line."""

    def __init__(self):
        self.lines = []
        self.append = self

    def remote(self, line):
        self.lines.append(line)


def test_worker_writes_directly_where_the_folder_is_visible(tmp_path, monkeypatch):
    monkeypatch.delenv(events.ENV, raising=False)
    monkeypatch.setattr(events, "_remote_sink", None)
    log = tmp_path / "events.jsonl"
    sink = FakeSink()
    events.attach_worker({"path": str(log), "sink": sink})
    events.emit("progress", stage="align:adapter", done=1, total=4)
    assert [e["done"] for e in events.read_events(log)] == [1] and sink.lines == []


def test_worker_without_the_folder_sends_events_to_the_driver_sink(tmp_path, monkeypatch):
    monkeypatch.delenv(events.ENV, raising=False)
    monkeypatch.setattr(events, "_remote_sink", None)
    sink = FakeSink()
    events.attach_worker({"path": str(tmp_path / "other-node" / "jobs" / "j" / "events.jsonl"), "sink": sink})
    events.emit("metrics", stage="align:adapter", metrics={"lm_loss": 1.5})
    assert len(sink.lines) == 1 and '"lm_loss": 1.5' in sink.lines[0]
    # The sink appends the line on the driver's node.
    log = tmp_path / "events.jsonl"
    events.EventSink(str(log)).append(sink.lines[0])
    assert events.read_events(log)[0]["stage"] == "align:adapter"


def test_driver_without_an_events_log_gives_workers_nothing(monkeypatch):
    monkeypatch.delenv(events.ENV, raising=False)
    assert events.driver_channel() == {}
    events.attach_worker({})  # a no-op, not an error
