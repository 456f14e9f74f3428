"""Provider actions (AWS, Slack, alert parsers), registered through the
``clampdown.actions`` entry points; the core never imports them."""
