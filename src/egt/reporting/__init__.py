"""Output for people: Markdown tables and figures, the HTML viewer, and the headless browser
that checks it."""
