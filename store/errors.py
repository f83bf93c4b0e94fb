"""Domain errors raised by the store; each carries a message fit to show a person."""

from __future__ import annotations


class QueuebotError(Exception):
    """Base for every error queuebot reports to a person as one line."""


class JobNotFound(QueuebotError):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"no job Q-{job_id}")
        self.job_id = job_id


class DecisionNotFound(QueuebotError):
    def __init__(self, decision_id: int) -> None:
        super().__init__(f"no decision D-{decision_id}")
        self.decision_id = decision_id


class InvalidTransition(QueuebotError):
    """The job was not in a state from which the transition is allowed."""

    def __init__(self, job_id: int, current: str, target: str) -> None:
        super().__init__(f"Q-{job_id} is {current}; it cannot become {target}")
        self.job_id = job_id
        self.current = current
        self.target = target


class DecisionClosed(QueuebotError):
    """An answer came after the decision was already answered, expired or cancelled."""

    def __init__(self, decision_id: int, state: str, answer: str | None, answered_by: str | None) -> None:
        if state == "answered":
            message = f"D-{decision_id} was already answered by {answered_by} with {answer}"
        else:
            message = f"D-{decision_id} is {state}; it takes no more answers"
        super().__init__(message)
        self.decision_id = decision_id
        self.state = state
        self.answer = answer
        self.answered_by = answered_by


class InvalidAnswer(QueuebotError):
    """The value is not one of the decision's options."""


class NotPermitted(QueuebotError):
    """The actor may not do this; the refusal is audited."""


class UnknownJobType(QueuebotError):
    def __init__(self, name: str, known: list[str]) -> None:
        hint = ", ".join(sorted(known)) or "none registered"
        super().__init__(f"unknown job type {name!r} (known: {hint})")
        self.name = name


class InvalidInput(QueuebotError):
    """A job's input did not validate against its type's model."""


class ConfigError(QueuebotError):
    """queuebot.toml or the environment is malformed."""


class DatabaseUnavailable(QueuebotError):
    """The database could not be reached."""
