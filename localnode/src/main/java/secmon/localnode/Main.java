package secmon.localnode;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.core.LoggerContext;
import org.apache.logging.log4j.core.config.Configurator;
import org.elasticsearch.ElasticsearchException;
import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.http.HttpServerTransport;
import org.elasticsearch.node.ClasspathNode;
import org.elasticsearch.node.Node;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.transport.netty4.Netty4Plugin;

import java.io.PrintStream;
import java.lang.invoke.MethodHandles;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * Starts one Elasticsearch node in this JVM: {@code Main HOME [HTTP_PORT [SETTING=VALUE ...]]}.
 *
 * Prints "READY <port>" on stdout and writes HOME/port once HTTP is bound; SIGTERM closes the node.
 * Meant to be started by scripts/es-local, which passes the JVM flags and the settings: always
 * {@code transport.port}, and for a node of a cluster {@code node.name}, {@code cluster.name},
 * {@code discovery.seed_hosts} and {@code cluster.initial_master_nodes} (comma-separated lists).
 * Without {@code discovery.seed_hosts} the node is a single-node cluster.
 */
public final class Main {

    static final String CLUSTER_NAME = "secmon-localnode";
    static final String NODE_NAME = "localnode-0";
    static final Set<String> LIST_SETTINGS = Set.of("discovery.seed_hosts", "cluster.initial_master_nodes");

    /** Everything this node runs with; see README.md for what is missing compared to a full distribution. */
    static final List<Class<? extends Plugin>> PLUGINS = List.of(
        Netty4Plugin.class,             // HTTP and transport; sets http.type/transport.type defaults itself
        RootEndpointPlugin.class,       // GET / and HEAD / (rest-root is not on Maven Central)
        SingleNodeDefaultsPlugin.class  // number_of_replicas defaults to 0, so one node is green
    );

    private static final String LOG4J2_PROPERTIES = """
        # Written by secmon localnode at every start; edits are overwritten.
        status = error
        appender.console.type = Console
        appender.console.name = console
        appender.console.layout.type = PatternLayout
        appender.console.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] [%node_name]%marker %m%n
        appender.console.filter.threshold.type = ThresholdFilter
        appender.console.filter.threshold.level = warn

        appender.file.type = RollingFile
        appender.file.name = file
        appender.file.fileName = ${sys:es.logs.base_path}${sys:file.separator}${sys:es.logs.cluster_name}.log
        appender.file.filePattern = ${sys:es.logs.base_path}${sys:file.separator}${sys:es.logs.cluster_name}-%i.log
        appender.file.layout.type = PatternLayout
        appender.file.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] [%node_name]%marker %m%n
        appender.file.policies.type = Policies
        appender.file.policies.size.type = SizeBasedTriggeringPolicy
        appender.file.policies.size.size = 32MB
        appender.file.strategy.type = DefaultRolloverStrategy
        appender.file.strategy.max = 2

        rootLogger.level = info
        rootLogger.appenderRef.console.ref = console
        rootLogger.appenderRef.file.ref = file

        # Deprecation warnings go to the file only; clients see them as Warning headers anyway.
        logger.deprecation.name = org.elasticsearch.deprecation
        logger.deprecation.level = warn
        logger.deprecation.additivity = false
        logger.deprecation.appenderRef.file.ref = file
        """;

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: Main HOME [HTTP_PORT [SETTING=VALUE ...]]");
            System.exit(2);
        }
        // LogConfigurator.configure() redirects System.out/err into log4j; keep the real ones.
        PrintStream stdout = System.out;
        PrintStream stderr = System.err;

        Path home = Path.of(args[0]).toAbsolutePath();
        int httpPort = args.length > 1 ? Integer.parseInt(args[1]) : 9200;
        Path config = home.resolve("config");
        Path data = home.resolve("data");
        Path logs = home.resolve("logs");
        Files.createDirectories(config);
        Files.createDirectories(data);
        Files.createDirectories(logs);
        Files.writeString(config.resolve("log4j2.properties"), LOG4J2_PROPERTIES, StandardCharsets.UTF_8);
        Path portFile = home.resolve("port");
        Files.deleteIfExists(portFile);

        Map<String, String> given = new LinkedHashMap<>();
        for (int i = 2; i < args.length; i++) {
            int eq = args[i].indexOf('=');
            if (eq <= 0) {
                System.err.println("not SETTING=VALUE: " + args[i]);
                System.exit(2);
            }
            given.put(args[i].substring(0, eq), args[i].substring(eq + 1));
        }
        String nodeName = given.getOrDefault("node.name", NODE_NAME);
        Settings.Builder builder = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", data.toString())
            .put("path.logs", logs.toString())
            .put("cluster.name", CLUSTER_NAME)
            .put("node.name", nodeName)
            .put("network.host", "127.0.0.1")
            .put("http.port", httpPort)
            // One port, outside the HTTP range: a range such as 9300-9399 took the HTTP port of the
            // next node started on 93xx, which then failed to bind.
            .put("transport.port", httpPort <= 64535 ? httpPort + 1000 : httpPort - 1000)
            .put("node.processors", 2)                     // the project machines have 2 cores
            .put("indices.breaker.total.use_real_memory", false) // as ES's own single-node tests do
            .put("cluster.routing.allocation.disk.threshold_enabled", false) // tiny disks must not block writes
            .put("action.destructive_requires_name", false); // lets tests DELETE /* in teardown
        if (!given.containsKey("discovery.seed_hosts")) {
            builder.put("discovery.type", "single-node");  // no cluster.initial_master_nodes with this
        }
        for (Map.Entry<String, String> setting : given.entrySet()) {
            String key = setting.getKey();
            if (LIST_SETTINGS.contains(key)) {
                builder.putList(key, List.of(setting.getValue().split(",")));
            } else {
                builder.put(key, setting.getValue());
            }
        }
        Settings settings = builder.build();

        // Order matters: ES's logging facade is null until configure() runs, and anything that logs
        // before it (Environment is fine, Node is not) would fail.
        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName(nodeName);
        Environment environment = new Environment(settings, config);
        LogConfigurator.configure(environment, true);

        Node node;
        try {
            // Initialise ElasticsearchException (and, through its handle table, every registered
            // exception class) on this thread now. Otherwise two ES threads that throw their first
            // exceptions at the same moment can deadlock in class initialisation (seen here: a
            // failing shard's close vs. an engine refresh, which hung SIGTERM forever).
            MethodHandles.lookup().ensureInitialized(ElasticsearchException.class);
            node = new ClasspathNode(environment, PLUGINS);
            node.start();
        } catch (Throwable t) {
            stderr.println("localnode: failed to start: " + t);
            t.printStackTrace(stderr);
            stderr.flush();
            // Some ES threads are non-daemon; exit explicitly instead of hanging.
            Runtime.getRuntime().halt(1);
            return;
        }

        CountDownLatch stopped = new CountDownLatch(1);
        Node started = node;
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                started.close();
                started.awaitClose(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                stderr.println("localnode: error while closing: " + e);
            } finally {
                try {
                    Files.deleteIfExists(portFile);
                } catch (Exception ignored) {
                    // best effort
                }
                // -Dlog4j.shutdownHookEnabled=false (as ES itself uses), so flush log4j here.
                Configurator.shutdown((LoggerContext) LogManager.getContext(false));
                stopped.countDown();
            }
        }, "localnode-shutdown"));

        int port = node.injector().getInstance(HttpServerTransport.class).boundAddress().publishAddress().getPort();
        Path tmp = home.resolve("port.tmp");
        Files.writeString(tmp, port + "\n", StandardCharsets.UTF_8);
        Files.move(tmp, portFile, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        stdout.println("READY " + port);
        stdout.flush();

        stopped.await(); // keep the JVM alive until the shutdown hook has run
    }
}
