"""Who may do what: answer a decision (its answerer policy), and operate on jobs (owner or admin)."""

from __future__ import annotations

from bot.settings import Config
from store.models import AnswererPolicy, Decision, Job

#: Actors that stand for someone with database access (the CLI, the scheduler) and may operate.
TRUSTED_ACTORS = frozenset({"cli", "scheduler", "timeout"})


class Authority:
    def __init__(self, config: Config) -> None:
        self.config = config

    def is_admin(self, user: str) -> bool:
        return user in TRUSTED_ACTORS or user in self.config.admins

    def in_group(self, user: str, group: str) -> bool:
        return user in self.config.groups.get(group, [])

    def may_answer(self, user: str, decision: Decision, job: Job) -> bool:
        """The decision's answerer policy; admins can always answer so nothing is ever stuck."""
        policy: AnswererPolicy = decision.answerers
        if policy.anyone or self.is_admin(user):
            return True
        if user in policy.users or any(self.in_group(user, group) for group in policy.groups):
            return True
        if policy.owner and job.owner is not None and user == job.owner:
            return True
        # A job with no owner, and no admins configured, would leave an owner-only decision unanswerable.
        return policy.owner and job.owner is None and not self.config.admins and not policy.users

    def may_operate(self, user: str, job: Job | None) -> bool:
        """Cancel, retry, pause, resume: the job's owner or an admin; anyone when no admins are set."""
        if self.is_admin(user) or not self.config.admins:
            return True
        return job is not None and job.owner == user

    def answerers_text(self, decision: Decision) -> str:
        policy = decision.answerers
        if policy.anyone:
            return "anyone"
        who = [*policy.users, *(f"group {group}" for group in policy.groups)]
        if policy.owner:
            who.append("the job's owner")
        if policy.admins:
            who.append("admins")
        return ", ".join(who) or "admins"
