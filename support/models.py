from django.conf import settings
from django.db import models

from mailboxes.models import Mailbox


class HelpdeskCall(models.Model):
    """A call or message about one mailbox, recorded by the helpdesk."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.PROTECT, related_name="helpdesk_calls")
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    recorded_at = models.DateTimeField(auto_now_add=True)
    summary = models.TextField(max_length=2000)
    resolved = models.BooleanField(default=False)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        null=True,
        blank=True,
    )

    class Meta:
        ordering = ["-recorded_at"]
        indexes = [
            # The calls to follow up, oldest first: a few among some 25,000 (1.2% of users).
            models.Index(
                fields=["recorded_at"],
                condition=models.Q(resolved=False),
                name="helpdesk_call_open",
            )
        ]

    def __str__(self) -> str:
        return f"Call about {self.mailbox_id} at {self.recorded_at:%Y-%m-%d %H:%M}"
