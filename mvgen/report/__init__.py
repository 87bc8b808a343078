"""Pictures and pages a person looks at: timeline plot, contact sheet, sweep comparison."""
