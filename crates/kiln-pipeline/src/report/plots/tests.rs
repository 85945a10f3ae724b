use super::*;

fn point(x: f64, y: f64, label: &str) -> LabeledPoint {
    LabeledPoint {
        x,
        y,
        label: label.into(),
        group: 0,
    }
}

#[test]
fn the_frontier_keeps_variants_nothing_beats() {
    let points = [
        point(500_000.0, 0.980, "fp32"),
        point(250_000.0, 0.980, "fp16"),
        point(130_000.0, 0.975, "int8"),
        point(130_000.0, 0.970, "dynamic"),
        point(40_000.0, 0.960, "pruned80_int8"),
        point(300_000.0, 0.990, "big"),
    ];
    let frontier: Vec<&str> = pareto_frontier(&points)
        .into_iter()
        .map(|i| points[i].label.as_str())
        .collect();
    assert_eq!(frontier, ["pruned80_int8", "int8", "fp16", "big"]);
}

#[test]
fn bytes_and_ticks_read_as_round_figures() {
    assert_eq!(format_bytes(120_000.0), "120 kB");
    assert_eq!(format_bytes(1_500_000.0), "1.5 MB");
    assert_eq!(format_bytes(950.0), "950 B");
    let percent = line::formatter(Axis::Percent, (0.9, 1.0));
    assert_eq!(percent(&0.95), "95%");
    let percent = line::formatter(Axis::Percent, (0.986, 0.996));
    assert_eq!(percent(&0.992), "99.2%");
    let rate = line::formatter(Axis::Number, (0.0, 0.002));
    assert_eq!(rate(&0.0005), "0.0005");
    let percent = line::formatter(Axis::Percent, (0.0, 1.0));
    assert_eq!(percent(&0.5), "50%");
    let count = line::formatter(Axis::Count, (1.0, 20.0));
    assert_eq!(count(&5.0), "5");
    assert_eq!(count(&2.5), "");
}

#[test]
fn plots_render_as_svg_and_png() {
    let chart = LineChart {
        panels: vec![Panel {
            title: "Loss".into(),
            x_label: "epoch".into(),
            y_label: "loss".into(),
            x_axis: Axis::Count,
            y_axis: Axis::Number,
            series: vec![
                Series::new("train", 0, vec![(1.0, 2.3), (2.0, 1.1), (3.0, 0.6)]),
                Series::new("validation", 0, vec![(1.0, 2.0), (2.0, 1.3), (3.0, 0.9)]).dashed(),
            ],
        }],
    };
    let plot = render("training", &chart).unwrap();
    assert!(plot.svg.starts_with("<svg"), "{}", &plot.svg[..80]);
    assert!(plot.svg.contains("\nvalidation\n"));
    let png = image::load_from_memory(&plot.png).unwrap();
    assert_eq!((png.width(), png.height()), (WIDTH, PANEL_HEIGHT));
    // Something other than white was drawn, and the same input draws the same bytes.
    assert!(png.to_rgb8().pixels().any(|p| p.0 != [255, 255, 255]));
    assert_eq!(render("training", &chart).unwrap().png, plot.png);

    let frontier = FrontierChart {
        panels: vec![FrontierPanel {
            title: "Accuracy vs gzip size".into(),
            x_label: "gzip size".into(),
            points: vec![
                point(130_000.0, 0.975, "int8"),
                point(131_000.0, 0.976, "qat_int8"),
                point(129_000.0, 0.974, "dynamic"),
                point(500_000.0, 0.98, "fp32"),
            ],
        }],
        groups: vec!["run".into()],
    };
    let plot = render("variants", &frontier).unwrap();
    for label in ["int8", "qat_int8", "dynamic", "fp32", "Pareto frontier"] {
        assert!(plot.svg.contains(&format!("\n{label}\n")), "{label}");
    }
    image::load_from_memory(&plot.png).unwrap();
}
