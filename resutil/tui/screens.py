"""The UI's modal screens: each asks one thing or shows one text, then goes away."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static


class AskScreen(ModalScreen["str | None"]):
    """A question with a one-line answer (Enter: the answer; Esc: None)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, default: str = "", note: str = "") -> None:
        super().__init__()
        self.question, self.default, self.note = question, default, note

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="title", markup=False)
            if self.note:
                yield Static(self.note, classes="note", markup=False)
            yield Input(self.default, id="answer")
            yield Label("Enter: OK   Esc: cancel", classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """Lines to read, then a yes/no question; only ``y`` says yes."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("y", "answer(True)", "Yes"),
                Binding("n,escape", "answer(False)", "No")]

    def __init__(self, title: str, lines: list[str], question: str) -> None:
        super().__init__()
        self.title_text, self.lines, self.question = title, lines, question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title", markup=False)
            yield Static("\n".join(self.lines), id="confirm-text", markup=False)
            yield Label(f"{self.question}  y: yes   n/Esc: no", classes="hint", markup=False)

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class RemoveScreen(ModalScreen["str | None"]):
    """Where to remove from: "local", "remote" or "both" (only those that apply)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("l", "choose('local')", "Local only"),
                Binding("r", "choose('remote')", "Remote only"),
                Binding("b", "choose('both')", "Both"),
                Binding("escape,n", "choose('')", "Cancel")]

    def __init__(self, names: list[str], local: bool, remote: bool) -> None:
        super().__init__()
        self.names, self.local, self.remote = names, local, remote

    def compose(self) -> ComposeResult:
        what = self.names[0] if len(self.names) == 1 else f"{len(self.names)} experiments"
        choices = []
        if self.local:
            choices.append("l: the local folder only")
        if self.remote:
            choices.append("r: the remote copy only")
        if self.local and self.remote:
            choices.append("b: both")
        with Vertical(classes="dialog"):
            yield Label(f"Remove {what}", classes="title", markup=False)
            yield Static("\n".join(self.names[:10] + (["..."] if len(self.names) > 10 else [])),
                         markup=False)
            yield Label("   ".join([*choices, "Esc: cancel"]), classes="hint", markup=False)

    def action_choose(self, where: str) -> None:
        allowed = {"local": self.local, "remote": self.remote,
                   "both": self.local and self.remote, "": True}
        if allowed[where]:
            self.dismiss(where or None)


class TextScreen(ModalScreen[None]):
    """A long text to read and scroll (a diff, the help); Esc or q closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "close", "Close")]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text, self.text = title, text

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(self.title_text, classes="title", markup=False)
            with VerticalScroll():
                yield Static(self.text, id="text", markup=False)
            yield Label("Esc/q: close   arrows, PgUp/PgDn: scroll", classes="hint")

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()

    def action_close(self) -> None:
        self.dismiss(None)
