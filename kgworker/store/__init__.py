"""MySQL (chaishu tables and ours) and Neo4j (the graph) access."""
