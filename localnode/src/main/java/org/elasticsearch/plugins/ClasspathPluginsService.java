package org.elasticsearch.plugins;

import org.elasticsearch.Build;
import org.elasticsearch.action.admin.cluster.node.info.PluginsAndModules;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;

import java.util.ArrayList;
import java.util.List;

/**
 * Loads plugins straight from the classpath instead of from plugins/ and modules/ directories.
 *
 * Why this package: PluginsService.loadPlugin, loadExtensions and the LoadedPlugin record are
 * package-private (checked with javap against elasticsearch-9.5.3.jar). ES's own test framework
 * (MockPluginsService) does the same thing; we do not depend on the test framework because it drags
 * in junit/randomizedtesting.
 */
public class ClasspathPluginsService extends PluginsService {

    private final List<LoadedPlugin> classpathPlugins;

    public ClasspathPluginsService(
        Settings settings,
        Environment environment,
        PluginsLoader pluginsLoader,
        List<Class<? extends Plugin>> pluginClasses
    ) {
        // The loader handed in is empty (no bundles), so the superclass finds nothing on disk.
        super(settings, environment.configDir(), pluginsLoader);
        List<LoadedPlugin> loaded = new ArrayList<>();
        for (Class<? extends Plugin> pluginClass : pluginClasses) {
            Plugin plugin = loadPlugin(pluginClass, settings, environment.configDir());
            PluginDescriptor descriptor = new PluginDescriptor(
                pluginClass.getName(),
                "classpath plugin",
                "NA",
                Build.current().version(),
                Integer.toString(Runtime.version().feature()),
                pluginClass.getName(),
                null,           // moduleName: we run on the classpath, not the module path
                List.of(),      // extendedPlugins
                false,          // hasNativeController
                false,          // isLicensed
                false,          // isModular
                false,          // isStable
                PluginDescriptor.DeploymentTarget.ALL // 9.4+ argument
            );
            loaded.add(new LoadedPlugin(descriptor, plugin, pluginClass.getClassLoader()));
        }
        this.classpathPlugins = List.copyOf(loaded);
        // Lets ExtensiblePlugins (none today) see extensions, as the real loader would.
        loadExtensions(classpathPlugins);
    }

    @Override
    protected List<LoadedPlugin> plugins() {
        return classpathPlugins;
    }

    /** So that GET _nodes/plugins lists what is really loaded rather than nothing. */
    @Override
    public PluginsAndModules info() {
        return new PluginsAndModules(classpathPlugins.stream().map(p -> new PluginRuntimeInfo(p.descriptor())).toList(), List.of());
    }
}
