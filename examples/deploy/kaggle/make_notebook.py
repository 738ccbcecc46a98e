"""Regenerates kgworker-kaggle.ipynb from the cells below (run with the project's Python).

Kept as code so the notebook's JSON stays valid nbformat and reviewable as a diff.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell(
        "# A kgworker node on Kaggle\n\n"
        "Runs one worker node inside a notebook session against your own Redis, MySQL and "
        "Neo4j (reachable from Kaggle: turn *Internet* on in the notebook settings). Store "
        "the passwords as Kaggle *Secrets* (Add-ons → Secrets): `REDIS_PASSWORD`, "
        "`DB_PASSWORD`, `NEO4J_PASSWORD` and, for paid providers, their keys live in your "
        "`ai_providers` table as usual. A session ends after some hours: the node drains on "
        "the stop cell, and whatever a killed session held returns to its queue once its "
        "lease expires.\n\n"
        "kgworker is not on a package index: this notebook installs a wheel you build from a "
        "checkout of the repository (`python -m pip wheel --no-deps -w dist .`) and upload, "
        "with the repository's `constraints.txt`, as a Kaggle dataset named `kgworker` "
        "(*Add data → Upload*), attached to the notebook."
    ),
    new_code_cell(
        "# 1. Install the wheel from the attached dataset, with the versions kgworker was\n"
        "#    tested with (constraints.txt). Built in a checkout of the repository with:\n"
        "#        python -m pip wheel --no-deps -w dist .\n"
        "!pip install -q -c /kaggle/input/kgworker/constraints.txt "
        "/kaggle/input/kgworker/kgworker-*.whl"
    ),
    new_code_cell(
        "# 2. Settings: plain values here, passwords from Kaggle Secrets.\n"
        "import os\n"
        "\n"
        "os.environ.update({\n"
        '    "REDIS_HOST": "redis.example.org",\n'
        '    "REDIS_PORT": "6379",\n'
        '    "DB_HOST": "mysql.example.org",\n'
        '    "DB_USER": "kgworker",\n'
        '    "DB_NAME": "chaishu",\n'
        '    "NEO4J_URI": "neo4j+s://graph.example.org:7687",\n'
        '    "KG_WORKER_NODE_NAME": "kaggle-1",\n'
        '    "KG_WORKER_PROVIDERS": "deepseek,rules",\n'
        '    "KG_WORKERS_PER_PROVIDER": "4",\n'
        '    "KG_API_HOST": "127.0.0.1",\n'
        "})\n"
        "try:\n"
        "    from kaggle_secrets import UserSecretsClient\n"
        "\n"
        "    secrets = UserSecretsClient()\n"
        '    for name in ("REDIS_PASSWORD", "DB_PASSWORD", "NEO4J_PASSWORD"):\n'
        "        os.environ[name] = secrets.get_secret(name)\n"
        "except Exception as exc:  # outside Kaggle: export them yourself\n"
        '    print("no Kaggle secrets:", exc)'
    ),
    new_code_cell("# 3. Can this session reach the stores?\n!kgworker doctor"),
    new_code_cell(
        "# 4. Run the node in the notebook's own event loop, in the background: the cell\n"
        "#    returns at once and the node keeps working between cells.\n"
        "import asyncio\n"
        "\n"
        "from kgworker import run_worker\n"
        "from kgworker.config import load_settings\n"
        "\n"
        "stop = asyncio.Event()\n"
        "node = asyncio.get_running_loop().create_task(run_worker(load_settings(), stop=stop))\n"
        'print("node started; metrics on http://127.0.0.1:9108/metrics")'
    ),
    new_code_cell(
        "# Alternative to step 4: a separate process, with its log in a file.\n"
        "# import subprocess\n"
        '# proc = subprocess.Popen(["kgworker", "run", "--log-file", "kgworker.log"])\n'
        "# A batch session instead: work until the queues are empty, then exit 0.\n"
        "# !kgworker run --burst"
    ),
    new_code_cell("# 5. The fleet as this node sees it (run again to refresh).\n!kgworker status"),
    new_code_cell(
        "# 6. Stop: stop claiming, let in-flight chapters finish (KG_SHUTDOWN_GRACE),\n"
        "#    put the rest back on its queue.\n"
        "stop.set()\n"
        "await node\n"
        'print("node stopped")'
    ),
]


def build() -> nbformat.NotebookNode:
    notebook = new_notebook(cells=CELLS)
    for number, cell in enumerate(notebook.cells, 1):
        cell.id = f"step-{number}"  # stable ids: regenerating gives the same file
    notebook.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


if __name__ == "__main__":
    target = Path(__file__).with_name("kgworker-kaggle.ipynb")
    nbformat.write(build(), target)
    print(f"wrote {target.name}")
