raise SystemExit("the user's own runner.py must never replace ClinAI's runner")
