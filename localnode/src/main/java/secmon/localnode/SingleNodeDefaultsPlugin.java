package secmon.localnode;

import org.elasticsearch.cluster.metadata.IndexMetadata;
import org.elasticsearch.cluster.metadata.ProjectMetadata;
import org.elasticsearch.common.compress.CompressedXContent;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.index.IndexMode;
import org.elasticsearch.index.IndexSettingProvider;
import org.elasticsearch.index.IndexVersion;
import org.elasticsearch.plugins.Plugin;

import java.time.Instant;
import java.util.Collection;
import java.util.List;

/**
 * Makes new indices default to 0 replicas, so that a one-node cluster turns green.
 *
 * Why an IndexSettingProvider rather than a "*" template: a provider's setting is a default that
 * any index template (legacy or composable) or create-index request overrides, because
 * overrulesTemplateAndRequestSettings() is false. A legacy "*" template would be ignored whenever
 * a composable template matches, and ES adds a deprecation warning header to every composable
 * template that overlaps it, which the python client turns into ElasticsearchWarning.
 */
public class SingleNodeDefaultsPlugin extends Plugin {

    @Override
    public Collection<IndexSettingProvider> getAdditionalIndexSettingProviders(IndexSettingProvider.Parameters parameters) {
        return List.of(new IndexSettingProvider() {
            // Signature as of 9.5.3 (javap); it changes between minors.
            @Override
            public void provideAdditionalSettings(
                String indexName,
                String dataStreamName,
                IndexMode templateIndexMode,
                ProjectMetadata projectMetadata,
                Instant resolvedAt,
                Settings indexTemplateAndCreateRequestSettings,
                List<CompressedXContent> combinedTemplateMappings,
                IndexVersion indexVersion,
                Settings.Builder additionalSettings
            ) {
                additionalSettings.put(IndexMetadata.SETTING_NUMBER_OF_REPLICAS, 0);
            }
        });
    }
}
