"""A faithful model of the chaishu seed worker, kept only to be measured against.

The seed forks N processes. Each is synchronous: it pops its provider's queue from the
right (newest first) with a blocking pop, runs the whole task itself chapter after chapter
with PyMySQL, cuts each chapter at 4,000 characters, makes up to three blocking LLM calls
per chapter with a sync httpx client, and writes every entity and relation with its own
MERGE through the sync Neo4j driver. Nothing here is used by kgworker.

Run one pool by hand: ``python -m bench.oldworker --provider fake --processes 10
--llm-base-url URL`` (REDIS_*/DB_*/NEO4J_* from the environment); SIGTERM stops it.
The chapter text reaches the fake provider between the tags it reads (see ``_prompt``),
so both systems get the same answers, make the same calls (entities, protagonist when
characters were found, relations) and write the same entities.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import time
import traceback
from dataclasses import dataclass
from multiprocessing.context import ForkProcess
from typing import Any

MAX_CONTENT = 4000
PROMPTS = {
    "entities": "提取人物、地点、组织、事件，输出JSON：",
    "protagonist": "判断主角，输出JSON：",
    "relations": "提取人物关系、事件关系、地点关系，输出JSON：",
}
# The fake provider (tests/fakellm) finds the call kind and the chapter text by these tags
# (kgworker.llm.prompts.TASK_TAG / TEXT_BEGIN / TEXT_END, copied so that the old model's
# processes do not import kgworker). Without them it answers an empty chapter: the old
# model would then make two calls instead of three and write nothing to Neo4j.
TASK_TAG, TEXT_BEGIN, TEXT_END = "【任务】", "<<<正文开始>>>", "<<<正文结束>>>"
ENTITY_LABELS = (
    ("characters", "Character"),
    ("locations", "Location"),
    ("organizations", "Organization"),
    ("events", "Event"),
)


RELATIONS = (("character_relationships", ""), ("event_relationships", ""),
             ("location_relationships", ""))


def _count(data: dict[str, Any], keys: tuple[tuple[str, str], ...]) -> int:
    return sum(len(data.get(key) or []) for key, _ in keys)


def _prompt(purpose: str, content: str) -> str:
    return f"{TASK_TAG}{purpose}\n{PROMPTS[purpose]}\n{TEXT_BEGIN}\n{content}\n{TEXT_END}"


def _rel_type(value: object) -> str:
    """The seed put the model's relation type into the Cypher text (letters only here)."""
    cleaned = "".join(ch for ch in str(value or "").upper() if ch.isalnum() or ch == "_")
    return cleaned if cleaned[:1].isalpha() else "RELATED_TO"


@dataclass(frozen=True)
class OldWorkerConfig:
    redis_host: str
    redis_port: int
    redis_db: int
    db_host: str
    db_port: int
    db_user: str
    db_password: str
    db_name: str
    neo4j_uri: str
    neo4j_user: str
    neo4j_password: str
    llm_base_url: str
    llm_model: str = "fake-model"
    provider: str = "fake"

    @classmethod
    def from_env(cls, provider: str, llm_base_url: str) -> OldWorkerConfig:
        env = os.environ
        return cls(
            redis_host=env.get("REDIS_HOST", "127.0.0.1"),
            redis_port=int(env.get("REDIS_PORT", "6379")),
            redis_db=int(env.get("REDIS_DB", "0")),
            db_host=env.get("DB_HOST", "127.0.0.1"),
            db_port=int(env.get("DB_PORT", "3306")),
            db_user=env.get("DB_USER", "root"),
            db_password=env.get("DB_PASSWORD", ""),
            db_name=env.get("DB_NAME", "chaishu"),
            neo4j_uri=env.get("NEO4J_URI", "bolt://127.0.0.1:7687"),
            neo4j_user=env.get("NEO4J_USER", "neo4j"),
            neo4j_password=env.get("NEO4J_PASSWORD", ""),
            llm_base_url=llm_base_url,
            provider=provider,
        )


def _call_llm(http: Any, cfg: OldWorkerConfig, purpose: str, content: str) -> dict[str, Any]:
    response = http.post(
        f"{cfg.llm_base_url}/chat/completions",
        headers={"Authorization": "Bearer old-worker"},
        json={
            "model": cfg.llm_model,
            "messages": [{"role": "user", "content": _prompt(purpose, content)}],
            "max_tokens": 2000,
            "temperature": 0.7,
        },
    )
    response.raise_for_status()
    text = response.json()["choices"][0]["message"]["content"]
    start, end = text.find("{"), text.rfind("}")
    try:
        parsed = json.loads(text[start : end + 1]) if start >= 0 else {}
    except json.JSONDecodeError:
        parsed = {}
    return parsed if isinstance(parsed, dict) else {}


def _write_graph(neo: Any, novel_id: int, chapter: dict[str, Any], data: dict[str, Any]) -> None:
    """One auto-commit MERGE per entity and per relation, as the seed did.

    ``session.run`` outside an explicit transaction is an auto-commit transaction: one
    round trip and one commit per statement. Each result is consumed before the next.
    """

    def run(query: str, **params: Any) -> None:
        session.run(query, **params).consume()

    def items(key: str) -> list[dict[str, Any]]:
        return [item for item in data.get(key) or [] if isinstance(item, dict)]

    with neo.session() as session:
        for kind, label in ENTITY_LABELS:
            for item in items(kind):
                if item.get("name"):
                    run(
                        f"MERGE (n:{label} {{name: $name, novel_id: $novel}}) "
                        "SET n.description = $description, n.chapter_id = $chapter",
                        name=str(item["name"]),
                        novel=novel_id,
                        chapter=int(chapter["id"]),
                        description=str(item.get("description", "")),
                    )
        for item in items("character_relationships"):
            if item.get("from") and item.get("to"):
                run(
                    "MATCH (a:Character {name: $a, novel_id: $novel}), "
                    "(b:Character {name: $b, novel_id: $novel}) "
                    f"MERGE (a)-[r:{_rel_type(item.get('relation'))}]->(b) "
                    "SET r.description = $description",
                    a=str(item["from"]),
                    b=str(item["to"]),
                    novel=novel_id,
                    description=str(item.get("description", "")),
                )
        for item in items("event_relationships"):
            if item.get("character") and item.get("event"):
                run(
                    "MATCH (c:Character {name: $c, novel_id: $novel}), "
                    "(e:Event {name: $e, novel_id: $novel}) "
                    "MERGE (c)-[r:PARTICIPATES_IN]->(e) SET r.role = $role",
                    c=str(item["character"]),
                    e=str(item["event"]),
                    role=str(item.get("role", "")),
                    novel=novel_id,
                )
        for item in items("location_relationships"):
            if item.get("event") and item.get("location"):
                run(
                    "MATCH (e:Event {name: $e, novel_id: $novel}), "
                    "(l:Location {name: $l, novel_id: $novel}) MERGE (e)-[:OCCURS_IN]->(l)",
                    e=str(item["event"]),
                    l=str(item["location"]),
                    novel=novel_id,
                )


def _process_task(cfg: OldWorkerConfig, conns: tuple[Any, Any, Any], task_id: int) -> None:
    db, neo, http = conns
    with db.cursor() as cur:
        cur.execute("SELECT novel_id FROM knowledge_graph_tasks WHERE id=%s FOR UPDATE", (task_id,))
        row = cur.fetchone()
        if row is None:
            db.rollback()
            return
        novel_id = int(row["novel_id"])
        cur.execute(
            "UPDATE knowledge_graph_tasks SET status='running', started_at=NOW() WHERE id=%s",
            (task_id,),
        )
        db.commit()
        cur.execute(
            "SELECT id, title, content, chapter_number FROM chapters WHERE novel_id=%s "
            "ORDER BY chapter_number",
            (novel_id,),
        )
        chapters = list(cur.fetchall())
    for completed, chapter in enumerate(chapters, 1):
        content = (chapter["content"] or "")[:MAX_CONTENT]
        data = _call_llm(http, cfg, "entities", content)
        if data.get("characters"):
            _call_llm(http, cfg, "protagonist", content)
        data.update(_call_llm(http, cfg, "relations", content))
        _write_graph(neo, novel_id, chapter, data)
        with db.cursor() as cur:
            cur.execute(
                "INSERT INTO knowledge_graph_chapter_status (kg_task_id, chapter_id, status, "
                "entities_extracted, relations_extracted, created_at, updated_at, "
                "completed_at) VALUES (%s, %s, 'completed', %s, %s, NOW(), NOW(), NOW())",
                (task_id, chapter["id"], _count(data, ENTITY_LABELS), _count(data, RELATIONS)),
            )
            cur.execute(
                "UPDATE knowledge_graph_tasks SET completed_chapters=%s, current_chapter_id=%s "
                "WHERE id=%s",
                (completed, chapter["id"], task_id),
            )
        db.commit()
    with db.cursor() as cur:
        cur.execute(
            "UPDATE knowledge_graph_tasks SET status='completed', completed_at=NOW() WHERE id=%s",
            (task_id,),
        )
    db.commit()


def worker_main(cfg: OldWorkerConfig) -> None:
    """One seed worker process: blocking pop from the right, the whole task in this process."""
    import httpx
    import pymysql  # type: ignore[import-untyped]
    import redis
    from neo4j import GraphDatabase

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the pool

    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    r = redis.Redis(host=cfg.redis_host, port=cfg.redis_port, db=cfg.redis_db)
    db = pymysql.connect(
        host=cfg.db_host,
        port=cfg.db_port,
        user=cfg.db_user,
        password=cfg.db_password,
        database=cfg.db_name,
        charset="utf8mb4",
        cursorclass=pymysql.cursors.DictCursor,
    )
    neo = GraphDatabase.driver(cfg.neo4j_uri, auth=(cfg.neo4j_user, cfg.neo4j_password))
    http = httpx.Client(timeout=60)
    queue = f"kg:ai_queue:{cfg.provider.lower()}"
    try:
        while not stop:
            item = r.brpop([queue], timeout=1)  # the seed popped the newest item first
            if item is None:
                continue
            try:
                payload = json.loads(item[1])
                _process_task(cfg, (db, neo, http), int(payload["task_id"]))
            except Exception:  # the item is lost; the process goes on
                traceback.print_exc()
                db.rollback()
    finally:
        http.close()
        neo.close()
        db.close()


def start_pool(cfg: OldWorkerConfig, processes: int) -> list[ForkProcess]:
    """Fork ``processes`` seed workers (the seed's KG_WORKERS_PER_PROVIDER)."""
    context = multiprocessing.get_context("fork")
    pool = [context.Process(target=worker_main, args=(cfg,), daemon=True) for _ in range(processes)]
    for proc in pool:
        proc.start()
    return pool


def stop_pool(pool: list[ForkProcess]) -> None:
    for proc in pool:
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signal.SIGTERM)
    for proc in pool:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()


def preload() -> None:
    """Import the client libraries in the parent before forking, as a seed module whose
    top level imports them would: the children share those pages copy-on-write."""
    import httpx  # noqa: F401
    import pymysql  # noqa: F401
    import redis  # noqa: F401
    from neo4j import GraphDatabase  # noqa: F401


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--provider", default="fake")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--llm-base-url", required=True)
    args = parser.parse_args()
    preload()
    stopping = False

    def _term(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _term)
    pool = start_pool(OldWorkerConfig.from_env(args.provider, args.llm_base_url), args.processes)
    print(f"OLDWORKER_STARTED {len(pool)}", flush=True)
    try:
        while not stopping and any(proc.is_alive() for proc in pool):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    stop_pool(pool)


if __name__ == "__main__":
    main()
