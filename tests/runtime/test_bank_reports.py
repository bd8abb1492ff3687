"""What `clipedge serve` relays from Triton's log about a served class bank: only the bank's lines, each once,
only when complete, and from the start of a restarted server's new log."""

from clipedge.runtime.triton.bank_reports import BankReports

SWAP = "class bank /m/model.classes.npz: now serving revision 3 (4 classes)"
REFUSAL = ("class bank /m/model.classes.npz: not swapped in, still serving revision 3 "
           "(class bank /m/model.classes.npz: checksum mismatch)")


def triton_line(message: str) -> str:
    """How Triton 2.51 writes a python-backend model's log_warn line."""
    return f'W1203 01:02:03.456789 4242 pb_stub.cc:410] "{message}"\n'


def test_bank_lines_are_relayed_once_and_only_when_complete(tmp_path):
    log = tmp_path / "tritonserver.log"
    reports = BankReports()
    assert reports.new_lines(log) == [] and reports.new_lines(None) == []  # no log yet
    log.write_text("I1203 startup chatter\n" + triton_line(SWAP) + triton_line(SWAP))  # both served models say it
    assert reports.new_lines(log) == [SWAP]
    assert reports.new_lines(log) == []
    with open(log, "a") as file:
        file.write(triton_line(REFUSAL)[:40])  # Triton is still writing the line
    assert reports.new_lines(log) == []
    with open(log, "a") as file:
        file.write(triton_line(REFUSAL)[40:] + "E1203 an unrelated error\n")
    assert reports.new_lines(log) == [REFUSAL]


def test_a_restarted_servers_new_log_is_read_from_its_start(tmp_path):
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    first.write_text(triton_line(SWAP) * 3)
    reports = BankReports()
    assert reports.new_lines(first) == [SWAP]
    second.write_text(triton_line(REFUSAL))
    assert reports.new_lines(second) == [REFUSAL]
