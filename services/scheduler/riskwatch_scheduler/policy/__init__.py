"""The task generator's policy: which groups deserve an LLM look now, and in what order under a budget."""
