"""Escalation ladders resolved for one job: which people (or channel) each level of its ladder reaches."""

from __future__ import annotations

from bot.settings import Config
from store.models import Job
from store.scans import Ladder


def ladder_for(config: Config, job: Job) -> Ladder:
    """The job's ladder from queuebot.toml, with each level's people resolved for this job."""
    ladder = config.ladder_for(job.type)

    def resolve(name: str) -> list[str]:
        if name == "owner":
            return [job.owner] if job.owner else list(config.admins)
        if name == "backup":
            return [config.backup] if config.backup else list(config.admins)
        if name == "channel":
            channel = job.channel or config.default_channel
            return [channel] if channel else []
        if name == "admins":
            return list(config.admins)
        if name.startswith("group:"):
            return list(config.groups.get(name.removeprefix("group:"), []))
        return [name]

    levels = []
    for level in ladder.levels:
        people = list(dict.fromkeys(person for name in level.notify for person in resolve(name)))
        levels.append((level.after, people))
    return Ladder(levels=levels, repeat_every_s=ladder.repeat_every)


def reached_by(config: Config, job: Job, user: str) -> bool:
    """Whether any level of the job's ladder names `user` (so they may acknowledge it)."""
    return any(user in people for _, people in ladder_for(config, job).levels)
