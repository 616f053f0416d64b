metagen 1.0

model "churn classifier" {
  description "FT-Transformer over named numeric columns and one categorical column."
  modality {
    inputs [tabular]
    outputs [label]
  }
  task {
    type classification
    num_classes 2
    numeric_features [tenure, monthly_charges, total_charges, support_calls]
    categorical_features ["contract:3"]
  }
  constraints {
    parameter_budget { max 2M }
  }
  architecture { family transformer }
  training { objective [classification] }
}
