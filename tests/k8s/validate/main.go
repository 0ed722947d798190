// k8s-validate decodes Kubernetes manifests strictly into the API types of k8s.io/api: an unknown or misspelt
// field, a wrong type or an unsupported kind fails, as the API server's strict field validation would. It stands
// in for `kubectl --dry-run=client`, which needs an API server for discovery. Usage: k8s-validate FILE...
package main

import (
	"bytes"
	"fmt"
	"os"
	"regexp"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var separator = regexp.MustCompile(`(?m)^---\s*$`)

func object(apiVersion, kind string) (any, error) {
	switch apiVersion + "/" + kind {
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, nil
	case "v1/Pod":
		return &corev1.Pod{}, nil
	case "v1/Service":
		return &corev1.Service{}, nil
	case "v1/PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}, nil
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, nil
	}
	return nil, fmt.Errorf("unsupported kind %s %s", apiVersion, kind)
}

func check(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n := 0
	for i, doc := range separator.Split(string(data), -1) {
		if len(bytes.TrimSpace([]byte(doc))) == 0 {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			return n, fmt.Errorf("%s: document %d: %w", path, i+1, err)
		}
		obj, err := object(head.APIVersion, head.Kind)
		if err != nil {
			return n, fmt.Errorf("%s: document %d: %w", path, i+1, err)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			return n, fmt.Errorf("%s: document %d (%s): %w", path, i+1, head.Kind, err)
		}
		n++
	}
	return n, nil
}

func main() {
	bad := false
	for _, path := range os.Args[1:] {
		n, err := check(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "k8s-validate:", err)
			bad = true
			continue
		}
		fmt.Printf("%s: %d object(s) valid\n", path, n)
	}
	if bad || len(os.Args) < 2 {
		os.Exit(1)
	}
}
