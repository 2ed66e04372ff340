"""Evidence pages: read-only HTML, one per scenario (guideline variant), that every card links to.

No patient data is on them, so they need no login: the rating of every listed study with its
radiation level, the rules that put a patient in the scenario in plain words, the preferred studies,
the primary sources and the knowledge version. Templates and CSS ship with the package.
"""
