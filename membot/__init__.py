"""membot: persistent, self-editing memory agents for Discord and Slack."""
