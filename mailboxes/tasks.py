"""django-q2 tasks: thin wrappers that load by id and call a service."""

from mailboxes import importing, services


def run_import(import_run_id: int) -> str:
    """Run a queued ImportRun once; a run already claimed or finished is left alone."""
    return importing.import_run_execute(import_run_id)


def count_programme() -> dict[str, int]:
    """Count the programme's mailboxes by status, for the central team's overview."""
    return services.programme_count()
