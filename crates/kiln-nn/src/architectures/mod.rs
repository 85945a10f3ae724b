//! The architectures, one file each, and their registry: one line per architecture declares
//! its module and makes both the `[model]` table ([`ModelConfig`], tagged by
//! `architecture = "…"`) and the one type every pipeline stage passes models around as
//! ([`AnyClassifier`]), so training, distillation into a student of another architecture,
//! pruning and QAT are not generic over each combination.
//!
//! To add an architecture: write `architectures/<name>.rs` (the Burn module opening with a
//! doc comment naming its paper, its lowering, and an [`Architecture`] implementation for its
//! `[model]` keys), then add one line to the `architectures!` list at the bottom of this file.

use burn::prelude::*;
use kiln_tflite::Model;
use serde::{Deserialize, Serialize};

use crate::architecture::Architecture;
use crate::pretrained::{ClassifierWeights, LoadedWeights, PretrainedError};
use crate::{Classifier, LowerError, QuantHooks, QuantizableClassifier};

macro_rules! architectures {
    ($($name:literal => $variant:ident($module:ident::$options:ident),)+) => {
        $(pub mod $module;)+

        /// Every registered architecture's network.
        // Moved a handful of times per run; boxing would cost Burn's Module derive its support.
        #[allow(clippy::large_enum_variant)]
        #[derive(Module, Debug)]
        pub enum AnyClassifier {
            $($variant(<$module::$options as Architecture>::Model),)+
        }

        /// A `[model]` table: `architecture = "…"` and that architecture's keys.
        #[derive(Clone, Debug, Serialize, Deserialize)]
        #[serde(tag = "architecture")]
        pub enum ModelConfig {
            $(#[serde(rename = $name)] $variant($module::$options),)+
        }

        impl ModelConfig {
            /// The architecture's name in configs (`"small_cnn"`).
            pub fn name(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $name,)+
                }
            }

            /// The `pretrained = "…"` weights source, when the architecture takes one.
            pub fn pretrained(&self) -> Option<&str> {
                match self {
                    $(Self::$variant(o) => o.pretrained(),)+
                }
            }

            /// The padding and BatchNorm style of a network that loads published weights.
            pub fn weight_style(&self) -> Option<crate::WeightStyle> {
                match self {
                    $(Self::$variant(o) => o.weight_style(),)+
                }
            }

            /// The network for `input` ([height, width, channels]) images and `classes`
            /// classes, with its parameters on `device`.
            pub fn build(
                &self,
                input: [usize; 3],
                classes: usize,
                device: &Device,
            ) -> Result<AnyClassifier, LowerError> {
                Ok(match self {
                    $(Self::$variant(o) => AnyClassifier::$variant(o.build(input, classes, device)?),)+
                })
            }
        }

        impl AnyClassifier {
            /// The architecture's name, for model descriptions.
            pub fn architecture(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => <$module::$options as Architecture>::TITLE,)+
                }
            }
        }

        impl Classifier for AnyClassifier {
            fn forward(&self, images: Tensor<4>) -> Tensor<2> {
                match self {
                    $(Self::$variant(m) => m.forward(images),)+
                }
            }

            fn lower(&self, description: &str) -> Result<Model, LowerError> {
                match self {
                    $(Self::$variant(m) => m.lower(description),)+
                }
            }

            fn backbone_features(&self, images: Tensor<4>) -> Option<Tensor<2>> {
                match self {
                    $(Self::$variant(m) => m.backbone_features(images),)+
                }
            }

            fn classify_features(&self, features: Tensor<2>) -> Option<Tensor<2>> {
                match self {
                    $(Self::$variant(m) => m.classify_features(features),)+
                }
            }

            fn with_backbone(self, mode: crate::BackboneMode) -> Self {
                match self {
                    $(Self::$variant(m) => Self::$variant(m.with_backbone(mode)),)+
                }
            }

            fn backbone_params(&self) -> Vec<burn::module::ParamId> {
                match self {
                    $(Self::$variant(m) => m.backbone_params(),)+
                }
            }

            fn exported_input_orders(&self) -> Vec<(String, Vec<usize>)> {
                match self {
                    $(Self::$variant(m) => m.exported_input_orders(),)+
                }
            }

            fn load_pretrained(
                &mut self,
                _architecture: &str,
                path: &std::path::Path,
                classifier: ClassifierWeights,
            ) -> Result<LoadedWeights, PretrainedError> {
                let architecture = self.architecture();
                match self {
                    $(Self::$variant(m) => m.load_pretrained(architecture, path, classifier),)+
                }
            }
        }

        impl QuantizableClassifier for AnyClassifier {
            fn forward_with<H: QuantHooks>(&self, images: Tensor<4>, hooks: &H) -> Tensor<2> {
                match self {
                    $(Self::$variant(m) => m.forward_with(images, hooks),)+
                }
            }
        }
    };
}

// One line per architecture: its name in configs, its variant, its file and `[model]` keys.
architectures! {
    "small_cnn" => SmallCnn(small_cnn::SmallCnnOptions),
    "efficientnet_lite" => EfficientNetLite(efficientnet_lite::EfficientNetLiteOptions),
    "efficientnet_lite0" => EfficientNetLite0(efficientnet_lite0::EfficientNetLite0Options),
    "efficientnet_b0" => EfficientNetB0(efficientnet_b0::EfficientNetB0Options),
    "mobilenet_v2" => MobileNetV2(mobilenet_v2::MobileNetV2Options),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelConfig, String> {
        toml::from_str::<ModelConfig>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn model_tables_are_tagged_by_architecture() {
        let config = parse("architecture = \"small_cnn\"\nconv_filters = [8, 16]\n").unwrap();
        assert_eq!(config.name(), "small_cnn");
        let model = config.build([28, 28, 1], 10, &Device::default()).unwrap();
        assert_eq!(model.architecture(), "SmallCnn");
        let config = parse("architecture = \"efficientnet_lite\"\nwidth_multiplier = 0.25\n");
        assert_eq!(config.unwrap().name(), "efficientnet_lite");
    }

    #[test]
    fn a_key_of_another_architecture_is_an_error_naming_it() {
        let err = parse("architecture = \"small_cnn\"\nwidth_multiplier = 0.5\n").unwrap_err();
        assert!(
            err.contains("width_multiplier") && err.contains("conv_filters"),
            "{err}"
        );
        let err = parse("architecture = \"resnet\"\n").unwrap_err();
        assert!(
            err.contains("resnet") && err.contains("efficientnet_lite"),
            "{err}"
        );
        assert!(
            parse("conv_filters = [8]\n")
                .unwrap_err()
                .contains("architecture")
        );
    }
}
