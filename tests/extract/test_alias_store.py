"""The alias table persists in ``kgworker_entity_aliases`` and loads back the same."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.mysql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from kgworker.domain.extraction import ChapterExtraction
from kgworker.domain.resolution import AliasTable, resolve
from kgworker.store.migrate import upgrade
from kgworker.store.schema.ours import EntityAlias


async def _save(engine: AsyncEngine, novel_id: int, table: AliasTable) -> None:
    rows = [{"novel_id": novel_id, **row} for row in table.new_rows()]
    if rows:
        async with engine.begin() as conn:
            await conn.execute(insert(EntityAlias).prefix_with("IGNORE"), rows)
    table.mark_saved()


async def _load(engine: AsyncEngine, novel_id: int) -> AliasTable:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(
                EntityAlias.entity_type, EntityAlias.alias, EntityAlias.canonical, EntityAlias.kind
            )
            .where(EntityAlias.novel_id == novel_id)
            .order_by(EntityAlias.id)
        )
        return AliasTable.from_rows(row._mapping for row in result)


async def test_alias_rows_round_trip_through_mysql(mysql_engine: AsyncEngine) -> None:
    await upgrade(mysql_engine)
    table = AliasTable()
    resolve(
        ChapterExtraction.model_validate(
            {
                "characters": [
                    {"name": "陈默", "aliases": ["陈掌柜"], "title": "掌柜"},
                    {"name": "陈默（巡警）", "aliases": ["小陈默"], "title": "巡警"},
                    {"name": "沈青山", "aliases": ["沈三", "Ｓhen"]},
                ],
                "locations": [{"name": "３号货仓"}],
            }
        ),
        table,
    )
    await _save(mysql_engine, 7, table)
    await _save(mysql_engine, 7, AliasTable.from_rows(table.to_rows()))  # nothing new: no-op
    other = AliasTable()
    resolve(ChapterExtraction.model_validate({"characters": [{"name": "陈默"}]}), other)
    await _save(mysql_engine, 8, other)  # another novel, same name: its own rows

    loaded = await _load(mysql_engine, 7)
    assert loaded.to_rows() == AliasTable.from_rows(table.to_rows()).to_rows()
    assert loaded.canonical("character", "小陈默") == "陈默（巡警）"
    assert loaded.canonical("character", "shen") == "沈青山"  # width and case folded
    assert loaded.canonical("location", "3号货仓") == "3号货仓"
    assert loaded.homonyms("character", "陈默") == ["陈默", "陈默（巡警）"]
    assert (await _load(mysql_engine, 8)).entities("character") == ["陈默"]
