from django import template

register = template.Library()
GB = 1024**3  # capacities are entered in GB of 1024³ bytes (see Wave.capacity_bytes)


@register.filter
def gb(value) -> str:
    """Bytes as GB with one decimal, so they compare with capacities entered in GB."""
    return f"{(value or 0) / GB:,.1f} GB"
