package org.elasticsearch.node;

import org.elasticsearch.env.Environment;
import org.elasticsearch.plugins.ClasspathPluginsService;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.plugins.PluginsLoader;
import org.elasticsearch.plugins.PluginsService;

import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A Node whose plugins come from the classpath.
 *
 * Why this package: Node(NodeConstruction), NodeConstruction.prepareConstruction and
 * NodeServiceProvider.newPluginService are package-private in 9.5.3 (javap). The public
 * Node(Environment, PluginsLoader) constructor would only load plugins from directories.
 */
public class ClasspathNode extends Node {

    public ClasspathNode(Environment environment, List<Class<? extends Plugin>> plugins) {
        super(
            NodeConstruction.prepareConstruction(
                environment,
                // No module or plugin bundles on disk. withServerExports=false: on the classpath the
                // server has no module descriptor, and exporting it would throw an NPE.
                PluginsLoader.createPluginsLoader(Set.of(), Set.of(), Map.of(), false),
                new NodeServiceProvider() {
                    @Override
                    PluginsService newPluginService(Environment env, PluginsLoader loader) {
                        return new ClasspathPluginsService(env.settings(), env, loader, plugins);
                    }
                },
                true // forbidPrivateIndexSettings, as in a production node
            )
        );
    }
}
