import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

import org.neo4j.configuration.GraphDatabaseInternalSettings;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.BoltConnectorInternalSettings;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.connectors.HttpsConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.io.ByteUnit;

/**
 * Test-only Neo4j Community server for kgworker's integration tests.
 *
 * Runs an embedded Neo4j with only the Bolt connector (no HTTP), bound to
 * 127.0.0.1, with authentication on and a known password for user "neo4j".
 * Started and stopped by scripts/services.
 *
 * Usage: java -cp classes:lib/* Launcher HOME_DIR BOLT_PORT
 * The password is taken from the environment variable KG_NEO4J_PASSWORD
 * (default "kgworker-test").
 *
 * Prints "KGWORKER-NEO4J READY ..." once Bolt answers and the password is set;
 * stops cleanly on SIGTERM/SIGINT through a shutdown hook.
 */
public final class Launcher {
    private static final String READY = "KGWORKER-NEO4J READY";

    private Launcher() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: Launcher HOME_DIR BOLT_PORT");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        int port = Integer.parseInt(args[1]);
        String password = System.getenv().getOrDefault("KG_NEO4J_PASSWORD", "kgworker-test");
        if (password.length() < 8) {
            System.err.println("KG_NEO4J_PASSWORD must have at least 8 characters");
            System.exit(2);
        }

        Files.createDirectories(home);
        Files.writeString(home.resolve("neo4j.pid"),
                ProcessHandle.current().pid() + "\n", StandardCharsets.US_ASCII);

        long t0 = System.nanoTime();
        DatabaseManagementService service = new DatabaseManagementServiceBuilder(home)
                .setConfig(GraphDatabaseSettings.data_directory, home.resolve("data"))
                .setConfig(GraphDatabaseSettings.logs_directory, home.resolve("logs"))
                .setConfig(GraphDatabaseSettings.auth_enabled, true)
                .setConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.mebiBytes(64))
                .setConfig(GraphDatabaseSettings.preallocate_logical_logs, false)
                .setConfig(GraphDatabaseSettings.logical_log_rotation_threshold, ByteUnit.mebiBytes(16))
                .setConfig(GraphDatabaseSettings.keep_logical_logs, "2 files")
                .setConfig(GraphDatabaseSettings.udc_enabled, false)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .setConfig(BoltConnector.advertised_address, new SocketAddress("127.0.0.1", port))
                .setConfig(BoltConnector.encryption_level, BoltConnector.EncryptionLevel.DISABLED)
                .setConfig(HttpConnector.enabled, false)
                .setConfig(HttpsConnector.enabled, false)
                // Don't linger on shutdown: a test server has no clients to drain.
                .setConfig(BoltConnectorInternalSettings.connection_shutdown_wait_time, Duration.ofSeconds(1))
                .setConfig(BoltConnectorInternalSettings.thread_pool_shutdown_wait_time, Duration.ofSeconds(1))
                .setConfig(GraphDatabaseInternalSettings.netty_server_shutdown_quiet_period, 0)
                .setConfig(GraphDatabaseInternalSettings.netty_server_shutdown_timeout, Duration.ofSeconds(1))
                .build();

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.out.println("KGWORKER-NEO4J stopping");
            try {
                service.shutdown();
            } finally {
                System.out.println("KGWORKER-NEO4J stopped");
                System.out.flush();
                stopped.countDown();
            }
        }, "kgworker-neo4j-shutdown"));

        setPassword(service, password);
        // Touch the default database so the first client does not wait for it.
        service.database(GraphDatabaseSettings.DEFAULT_DATABASE_NAME)
                .executeTransactionally("RETURN 1");

        long ms = (System.nanoTime() - t0) / 1_000_000;
        System.out.println(READY + " bolt://127.0.0.1:" + port + " in " + ms + " ms");
        System.out.flush();
        stopped.await();
    }

    /** Sets the password of user "neo4j" and clears the change-required flag. */
    private static void setPassword(DatabaseManagementService service, String password) {
        var system = service.database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME);
        try {
            system.executeTransactionally(
                    "ALTER USER neo4j SET PLAINTEXT PASSWORD $pw CHANGE NOT REQUIRED",
                    Map.of("pw", password));
        } catch (RuntimeException e) {
            // Re-setting the current password is refused; that case is fine.
            String msg = String.valueOf(e.getMessage());
            if (!msg.contains("cannot be the same")) {
                throw e;
            }
        }
    }
}
