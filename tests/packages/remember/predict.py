import uuid

WORKER = uuid.uuid4().hex  # which worker process served a job
SECRETS: list[str] = []  # every secret a job gave this worker (a module global)


def run(input_path: str, output_dir: str, params: dict) -> dict:
    seen = list(SECRETS)
    if "secret" in params:
        SECRETS.append(params["secret"])
    return {"worker": WORKER, "seen": seen}
