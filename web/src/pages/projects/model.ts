export interface Project { name: string; file_count: number; total_bytes: number; updated_at: string }
export interface ProjectFile { path: string; size: number; modified_at: string }
export interface ProjectDetail extends Project { files: ProjectFile[] }

export const STARTER = `FROM local/busybox:latest
# COPY index.html /www/index.html
RUN echo built > /built.txt
CMD ["sh", "-c", "echo hello from cloudlet; sleep 3600"]
`;
