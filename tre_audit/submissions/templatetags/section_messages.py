"""Messages shown where the action was: a message's ``extra_tags`` names its section."""

from django import template

register = template.Library()


@register.inclusion_tag("_messages.html", takes_context=True)
def messages_for(context, section: str = ""):
    """The messages for ``section`` (its element id); "" for those that name none (the top)."""
    found = [m for m in context.get("messages", ()) if (m.extra_tags or "") == section]
    return {"found": found, "section": section}
