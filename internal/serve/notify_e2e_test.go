package serve_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/recycler/recycler/internal/engine"
	"github.com/recycler/recycler/internal/serve"
	"github.com/recycler/recycler/internal/testenv"
)

// A recycle whose drain waits for a long pod is announced on both channels: when
// it starts, once when it has been in Drain longer than --notify-blocked-after
// (naming the pod it waits for), and when it is done.
func TestServeNotifiesStartBlockedAndDoneOnWebhookAndSNS(t *testing.T) {
	f := setup(t)
	_, nodes := f.group("notify", 1)
	var (
		mu   sync.Mutex
		hook []serve.Notification
	)
	web := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		var n serve.Notification
		b, _ := io.ReadAll(r.Body)
		var slack struct{ Text string }
		if json.Unmarshal(b, &n) != nil || json.Unmarshal(b, &slack) != nil || !strings.HasPrefix(slack.Text, "recycler: ") {
			t.Errorf("webhook body %s is not Slack-compatible JSON with our fields", b)
		}
		mu.Lock()
		hook = append(hook, n)
		mu.Unlock()
	}))
	defer web.Close()
	cfg, err := config.LoadDefaultConfig(f.ctx, config.WithRegion(f.env.Region), config.WithBaseEndpoint(f.env.AWS.URL()),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDSIMULATED", "simulated", "")))
	if err != nil {
		t.Fatal(err)
	}
	topic, receive := snsSubscriber(t, cfg, "notify-people")

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "notify-job", Namespace: "default", Labels: map[string]string{"app": "notify-job"},
			Annotations: map[string]string{testenv.PodCompleteDelayAnnotation: "12s"}},
		Spec: corev1.PodSpec{NodeName: nodes[0], RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}},
	}
	if _, err := f.kube.Client.CoreV1().Pods("default").Create(f.ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s := f.startServe("notify", "--selector", "app=notify-job", "--namespace", "default",
		"--notify-webhook", web.URL, "--notify-sns-topic", topic, "--notify-blocked-after", "4s")
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"requested"}}}`, serve.AnnotationRecycle)
	if _, err := f.kube.Client.CoreV1().Nodes().Patch(f.ctx, nodes[0], types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	exs := s.waitEnded(t, f, 3*time.Minute)
	if len(exs) != 1 || exs[0].Status != engine.StatusSucceeded {
		t.Fatalf("executions %+v, want one Succeeded", exs)
	}
	var kinds []serve.NotifyKind
	f.eventually(30*time.Second, "done notified on the webhook", func() bool {
		mu.Lock()
		defer mu.Unlock()
		kinds = kinds[:0]
		for _, n := range hook {
			kinds = append(kinds, n.Kind)
		}
		return len(hook) > 0 && hook[len(hook)-1].Kind == serve.NotifyDone
	})
	want := []serve.NotifyKind{serve.NotifyStarted, serve.NotifyBlocked, serve.NotifyDone}
	if fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Fatalf("webhook got %v, want %v", kinds, want)
	}
	mu.Lock()
	blocked := hook[1]
	mu.Unlock()
	if blocked.Execution != exs[0].ID || !strings.Contains(blocked.Text, "in Drain") || !strings.Contains(blocked.Text, "default/notify-job") {
		t.Errorf("blocked notification %+v does not name the execution, the step and the pod it waits for", blocked)
	}
	for i, k := range want {
		var env snsEnvelope
		var n serve.Notification
		if err := json.Unmarshal([]byte(receive()), &env); err != nil || json.Unmarshal([]byte(env.Message), &n) != nil {
			t.Fatalf("SNS message %d: %v", i, err)
		}
		if n.Kind != k || n.Execution != exs[0].ID || env.Subject != "recycler: "+string(k)+" "+nodes[0] {
			t.Errorf("SNS message %d = %q %+v, want %s about %s", i, env.Subject, n, k, nodes[0])
		}
	}
}
